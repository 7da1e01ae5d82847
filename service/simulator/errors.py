"""Novita's error body (docs/novita-facts.md): `{code, reason, message, metadata}`, code = status.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.simulator import json_responses
from service.simulator.readings import NOT_FOUND_TEXT, Readings


class SimError(Exception):
    """A request the simulated API refuses; rendered as Novita's error body."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        *,
        not_found: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}
        self.headers = headers or {}
        self.not_found = not_found  # the addressed resource is missing: `not_found` reading

    def response(self, readings: Readings | None = None) -> web.Response:
        status = self.status
        if self.not_found and readings is not None and readings.not_found != "400":
            if readings.not_found == "404-text":
                return web.Response(status=404, text=NOT_FOUND_TEXT, content_type="text/plain")
            status = 404
        return error_response(
            status, self.reason, self.message, self.metadata, self.headers, readings
        )


def error_response(
    status: int,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    readings: Readings | None = None,
) -> web.Response:
    body: dict[str, Any] = {"code": status, "reason": reason, "message": message}
    if readings is not None and readings.error_reason == "message":
        body = {"code": status, "message": f"{reason}: {message}"}
    body["metadata"] = metadata or {}
    return json_responses.json_response(body, status=status, headers=headers)


def not_found(what: str) -> SimError:
    """The addressed resource does not exist (answered in the `not_found` reading's form)."""
    return SimError(400, "RESOURCE_NOT_FOUND", f"{what} not found", not_found=True)


def invalid(field: str, problem: str) -> SimError:
    return SimError(400, "VALIDATOR_PARAM", f"{field}: {problem}", {"field": field})


def conflict() -> SimError:
    return SimError(400, "CONFLICT", "invalid state change")


def insufficient(message: str = "insufficient resource") -> SimError:
    return SimError(400, "INSUFFICIENT_RESOURCE", message)
