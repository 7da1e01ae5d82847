"""The first layer every HTTP request passes: its request id and its metrics, in one pass.

`X-Request-ID` is echoed when the client sends a sane one and generated otherwise; it goes
into the request state (error bodies carry it), the response header, and the context
every log line of the request reads it from (`service.logging.REQUEST_ID`). Each request
is then counted and timed by route template (never the raw path, so ids cannot explode
the label set).

It also refuses, with 404, a path no resource can have: one holding a NUL (`%00`, which
PostgreSQL's text cannot hold, so no lookup may see it) or longer than `MAX_PATH`
characters (ids are short). The input gate's part for path parameters lives here, ahead
of every route.

One layer instead of two: on the hot endpoints every wrapper around `send` and every
context manager is a measurable share of the request.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.logging import REQUEST_ID
from service.metrics import HttpMetrics

REQUEST_ID_HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
# Generated ids: a random per-process prefix and a counter (32 hex characters). Unique
# without a system call per request; an id needs to be unique, not secret.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()
MAX_PATH = 1024


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE.match(value):
                return value.decode("ascii")
            break
    return new_request_id()


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
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            path: str = scope["path"]
            if "\x00" in path or len(path) > MAX_PATH:
                await _no_such_path(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            self.metrics.observe(
                route_label(scope), scope["method"], status, time.perf_counter() - started
            )


async def _no_such_path(scope: Scope, receive: Receive, send: Send) -> None:
    message = f"no resource has a path with a NUL character or longer than {MAX_PATH}"
    response = error_response(Request(scope), 404, "NOT_FOUND", message)
    await response(scope, receive, send)
