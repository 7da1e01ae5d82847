"""Novita's error body (novita-api.md §7): `{code, reason, message, metadata}`; code = status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.simulator import wire


class SimError(Exception):
    """A request the simulated API refuses; rendered as Novita's error body."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.reason, self.message, self.metadata, self.headers)


def error_response(
    status: int,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "code": status,
        "reason": reason,
        "message": message,
        "metadata": metadata or {},
    }
    return wire.json_response(body, status=status, headers=headers)


def invalid(field: str, problem: str) -> SimError:
    return SimError(400, "VALIDATOR_PARAM", f"{field}: {problem}", {"field": field})


def conflict() -> SimError:
    return SimError(400, "CONFLICT", "invalid state change")


def insufficient(message: str = "insufficient resource") -> SimError:
    return SimError(400, "INSUFFICIENT_RESOURCE", message)
