"""Every exception the client raises on purpose, and the one table from HTTP answers to them.

LifecycleClientError            root; the class docstring is the default message
├── TransportError              no HTTP answer: connection refused, reset, timed out
├── ServiceAPIError             the service answered an error (status, code, requestId)
│   ├── BadRequestError         400: the request is not what the API accepts
│   │   └── ValidationError     422: fields fail validation (`fields` names them)
│   ├── AuthenticationError     401: missing or wrong API key
│   ├── PermissionDeniedError   403
│   ├── NotFoundError           404: no such instance or notification (or route)
│   ├── ConflictError           409: illegal transition, busy, idempotency conflict
│   ├── PayloadTooLargeError    413
│   ├── RateLimitedError        429: `retry_after` says when to try again
│   └── ServerError             5xx
│       └── UnavailableError    503: Novita or the database is unavailable; `retry_after`
├── WaitError                   `wait_until` gave up
│   ├── TerminalStatusError     the instance reached a status it never leaves (deleted)
│   │   └── InstanceFailedError the instance failed
│   └── WaitTimeoutError        the timeout passed first (also a `TimeoutError`)
└── WebhookVerificationError    see `novita_lifecycle_client.webhooks`
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class LifecycleClientError(Exception):
    """The novita-lifecycle client could not complete the operation."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.message)


class TransportError(LifecycleClientError):
    """The service could not be reached, or did not answer in time."""


class ServiceAPIError(LifecycleClientError):
    """The service answered with an error."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int,
        code: str,
        details: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f", request {self.request_id}" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{where}"


class BadRequestError(ServiceAPIError):
    """The request is not one the API accepts."""


class ValidationError(BadRequestError):
    """Some fields are invalid."""

    @property
    def fields(self) -> list[dict[str, Any]]:
        """One `{"field", "message", "value"?}` entry per invalid field."""
        if isinstance(self.details, dict):
            fields = self.details.get("fields")
            if isinstance(fields, list):
                return [item for item in fields if isinstance(item, dict)]
        return []


class AuthenticationError(ServiceAPIError):
    """A valid API key is required."""


class PermissionDeniedError(ServiceAPIError):
    """The API key may not do this."""


class NotFoundError(ServiceAPIError):
    """No such resource."""


class ConflictError(ServiceAPIError):
    """The request conflicts with the resource's current state."""


class PayloadTooLargeError(ServiceAPIError):
    """The request body is too large."""


class RateLimitedError(ServiceAPIError):
    """Too many requests; retry after `retry_after` seconds."""


class ServerError(ServiceAPIError):
    """The service failed to handle the request."""


class UnavailableError(ServerError):
    """The service or the GPU provider is unavailable; retry after `retry_after` seconds."""


class WaitError(LifecycleClientError):
    """The instance did not reach the awaited status."""

    def __init__(self, message: str | None = None, *, instance: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.instance = instance  # the last state seen, if any


class TerminalStatusError(WaitError):
    """The instance reached a status it never leaves."""


class InstanceFailedError(TerminalStatusError):
    """The instance failed."""


class WaitTimeoutError(WaitError, TimeoutError):
    """The instance did not reach the awaited status in time."""


class WebhookVerificationError(LifecycleClientError):
    """The webhook could not be verified."""


_ERROR_BY_STATUS: dict[int, type[ServiceAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: UnavailableError,
}
_MAX_TEXT = 200


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header; the HTTP-date form is not used by the service."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ServiceAPIError:
    """The exception for an error answer; any body is accepted (a proxy may answer HTML)."""
    kind = _ERROR_BY_STATUS.get(status) or (ServerError if status >= 500 else ServiceAPIError)
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
    text = body.decode("utf-8", "replace").strip()[:_MAX_TEXT]
    message = error.get("message") if isinstance(error.get("message"), str) else None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    request_id = error.get("requestId")
    if not isinstance(request_id, str):
        request_id = _header(headers, "x-request-id")
    return kind(
        message or text or f"HTTP {status}",
        status=status,
        code=code or f"HTTP_{status}",
        details=error.get("details"),
        request_id=request_id,
        retry_after=parse_retry_after(_header(headers, "retry-after")),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; aiohttp's headers are not
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
