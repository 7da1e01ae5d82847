"""The one table that turns exceptions into HTTP answers (README: errors).

`ServiceError`s are expected failures and map to their status; Starlette's HTTP exceptions
(unknown route, wrong method) keep theirs; anything else is a bug: logged with its
traceback and answered 500 without details.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.api.responses import JSONResponse
from service.db.outage import OUTAGE_TYPES, describe, is_database_outage
from service.errors import (
    AuthenticationError,
    DatabaseError,
    DomainError,
    ForbiddenError,
    IdempotencyConflictError,
    IllegalTransitionError,
    InstanceBusyError,
    InstanceNotFoundError,
    MalformedRequestError,
    PayloadTooLargeError,
    RequestError,
    ServiceError,
    UpstreamError,
    ValidationFailedError,
    WebhookSignatureError,
)
from service.ingest import IngestBusyError, IngestUnavailableError
from service.lifecycle import InstanceLostError, NoCapacityToStartError, ProviderStateConflictError
from service.notifications.errors import (
    InvalidCursorError,
    NotificationNotFoundError,
    NotificationPendingError,
)
from service.novita.errors import NovitaError, NovitaRateLimitedError, NovitaUnavailableError

log = structlog.get_logger(__name__)

# Most specific class first: the first match wins.
STATUS_BY_ERROR: tuple[tuple[type[ServiceError], int], ...] = (
    (MalformedRequestError, 400),
    (AuthenticationError, 401),
    (WebhookSignatureError, 401),
    (ForbiddenError, 403),
    (PayloadTooLargeError, 413),
    (ValidationFailedError, 422),
    (RequestError, 400),
    (InstanceNotFoundError, 404),
    (NotificationNotFoundError, 404),
    (NotificationPendingError, 409),
    (InvalidCursorError, 422),
    (IllegalTransitionError, 409),
    (InstanceBusyError, 409),
    (IdempotencyConflictError, 409),
    (DomainError, 422),
    (DatabaseError, 503),
    (IngestBusyError, 503),
    (IngestUnavailableError, 503),
    (NoCapacityToStartError, 409),
    (ProviderStateConflictError, 409),
    (InstanceLostError, 409),
    (NovitaUnavailableError, 503),
    (NovitaRateLimitedError, 503),
    (UpstreamError, 502),
)
DEFAULT_RETRY_AFTER = 5

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def request_id_of(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "requestId": request_id_of(request),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def status_for(error: ServiceError) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def headers_for(error: ServiceError, status: int) -> dict[str, str]:
    if isinstance(error, AuthenticationError):
        return {"WWW-Authenticate": 'Bearer realm="novita-lifecycle"'}
    if status in (503, 429) or isinstance(error, InstanceBusyError):
        retry_after = getattr(error, "retry_after", None) or DEFAULT_RETRY_AFTER
        return {"Retry-After": str(max(1, round(retry_after)))}
    return {}


def details_for(error: ServiceError) -> object:
    if isinstance(error, ValidationFailedError):
        return {"fields": error.fields}
    if isinstance(error, NovitaError):
        # What Novita said, not how we reached it (no endpoint, no metadata echo).
        return {"providerStatus": error.status, "providerReason": error.reason}
    return error.details or None


async def service_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    status = status_for(exc)
    if status >= 500:
        log.warning("http.service_error", code=exc.code, status=status, error=exc.message)
    return error_response(
        request, status, exc.code, exc.message, details_for(exc), headers_for(exc, status)
    )


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    return error_response(request, exc.status_code, code, str(exc.detail), headers=exc.headers)


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    if is_database_outage(exc):
        # Not a bug: one line, no traceback, and the client may retry (service.db.outage).
        log.warning("http.database_unavailable", path=request.url.path, error=describe(exc))
        return error_response(
            request,
            503,
            "DATABASE_UNAVAILABLE",
            "the database is not available; retry shortly",
            headers={"Retry-After": str(DEFAULT_RETRY_AFTER)},
        )
    log.error("http.unhandled_error", path=request.url.path, exc_info=exc)
    return error_response(request, 500, "INTERNAL_ERROR", "internal error; it has been logged")


EXCEPTION_HANDLERS = {
    ServiceError: service_error_handler,
    HTTPException: http_exception_handler,
    # Database errors are answered here rather than by Starlette's error middleware, which
    # re-raises after answering, so the server would log a second traceback.
    **dict.fromkeys(OUTAGE_TYPES, unhandled_error_handler),
    Exception: unhandled_error_handler,
}
