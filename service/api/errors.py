"""The one place exceptions become HTTP answers (README: errors).

A `ServiceError` is an expected failure and says its own answer (`http_status`, `code`,
`public_details()`, `http_headers()`: the tree in `service.errors`); Starlette's HTTP
exceptions (unknown route, wrong method) keep their status; a database outage is a 503;
anything else is a bug: logged with its traceback and answered 500 without details.
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
from service.errors import RETRY_AFTER_SECONDS, ServiceError, retry_after_header

log = structlog.get_logger(__name__)

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


async def service_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    status = exc.http_status
    if status >= 500:
        log.warning("http.service_error", code=exc.code, status=status, error=exc.message)
    return error_response(
        request, status, exc.code, exc.message, exc.public_details(), exc.http_headers()
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
            headers=retry_after_header(RETRY_AFTER_SECONDS),
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
