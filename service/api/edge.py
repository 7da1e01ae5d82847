"""The first layer every HTTP request passes: its request id and its metrics, in one pass.

`X-Request-ID` is echoed when the client sends a sane one and generated otherwise; it goes
into the request state (error bodies carry it), the response header, and structlog's
context for every log line of the request. Each request is then counted and timed by
route template (never the raw path, so ids cannot explode the label set).

One layer instead of two: on the hot endpoints every wrapper around `send` and every
context manager is a measurable share of the request.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from service.metrics import HttpMetrics

REQUEST_ID_HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE.match(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(16)


def route_label(scope: Scope) -> str:
    """The route template that answered (with its mount prefix), or `unmatched`."""
    template = getattr(scope.get("route"), "path", None)
    return f"{scope.get('root_path', '')}{template}" if template else "unmatched"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        tokens = bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_contextvars(**tokens)
            self.metrics.observe(
                route_label(scope), scope["method"], status, time.perf_counter() - started
            )
