"""The simulator's aiohttp application: v1 routes, admin routes, and the middleware that
authenticates, counts and injects faults in front of them."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from service.simulator.admin import AdminRoutes
from service.simulator.errors import SimError, error_response
from service.simulator.routes import V1Routes

if TYPE_CHECKING:
    from service.simulator.simulator import Simulator

logger = logging.getLogger(__name__)

V1_PREFIX = "/gpu-instance/openapi/v1"
ADMIN_PREFIX = "/_sim"

_HTTP_REASONS = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}


def authorised(header: str, keys: tuple[str, ...]) -> bool:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    if not keys:
        return True
    presented = token.encode()
    return any(hmac.compare_digest(presented, key.encode()) for key in keys)


def build_app(sim: Simulator) -> web.Application:
    keys = tuple(sim.config.api_keys)

    async def v1(request: web.Request, handler: Handler) -> web.StreamResponse:
        sim.request_count += 1
        sim.requests_by_path[request.path[len(V1_PREFIX):] or "/"] += 1
        readings = sim.readings
        if not authorised(request.headers.get("Authorization", ""), keys):
            return error_response(
                401, "UNAUTHORIZED", "invalid or missing API key", readings=readings
            )
        verdict = sim.injector.judge()
        if verdict.hang:
            await sim.wait_stopping(verdict.hang)
            return error_response(
                504, "GATEWAY_TIMEOUT", "upstream request timeout", readings=readings
            )
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        if verdict.status == 429:
            return error_response(
                429, "RATE_LIMIT_EXCEEDED", "too many requests, please retry later",
                headers={"Retry-After": str(verdict.retry_after)}, readings=readings,
            )
        if verdict.status:
            return error_response(verdict.status, "UNKNOWN", "internal error", readings=readings)
        try:
            return await handler(request)
        except SimError as exc:
            return exc.response(readings)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path.startswith(V1_PREFIX):
                return await v1(request, handler)
            if not authorised(request.headers.get("Authorization", ""), keys):
                return error_response(401, "UNAUTHORIZED", "invalid or missing API key")
            return await handler(request)
        except SimError as exc:
            return exc.response()
        except web.HTTPException as exc:
            reason = _HTTP_REASONS.get(exc.status, "UNKNOWN")
            return error_response(exc.status, reason, exc.reason)
        except Exception:
            logger.exception("simulator.handler_failed path=%s", request.path)
            return error_response(500, "UNKNOWN", "internal error")

    app = web.Application(middlewares=[middleware])
    for prefix, table in (
        (V1_PREFIX, V1Routes(sim).table()),
        (ADMIN_PREFIX, AdminRoutes(sim).table()),
    ):
        for route in table:
            app.router.add_route(route.method, prefix + route.path, route.handler)
    return app
