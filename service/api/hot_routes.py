"""A direct route to the two endpoints that carry nearly all traffic.

`GET /api/instances/{id}` (clients polling their instances) and `POST /webhooks/novita`
(the provider's event stream) are dispatched here, ahead of Starlette's whole stack
(its error middleware, exception middleware, router and mount). They run the very same
endpoint code, behind the same API-key check, and their errors go through the same
handlers as everywhere else; what is skipped is only the generic machinery (route
tables, nested middleware, per-layer send wrappers), which otherwise costs more than the
endpoints' own work. Every other request, and HEAD on these paths, goes on to Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import record_caller
from service.api.errors import service_error_handler, unhandled_error_handler
from service.api.instances import get_instance
from service.api.webhooks import ingest_webhook
from service.errors import ServiceError

Handler = Callable[[Scope, Receive], Awaitable[Response]]
INSTANCE_PREFIX = "/api/instances/"


async def _instance(scope: Scope, receive: Receive) -> Response:
    return await get_instance(Request(scope, receive))


@dataclass(frozen=True, slots=True)
class HotRoute:
    """What the metrics label a request with (`path`), like a Starlette route."""

    path: str
    handler: Handler
    api_key: bool


INSTANCE_ROUTE = HotRoute("/api/instances/{instance_id}", _instance, api_key=True)
WEBHOOK_ROUTE = HotRoute("/webhooks/novita", ingest_webhook, api_key=False)


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (what Starlette's router matches on)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class HotRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST" or method == "GET":
                path = route_path(scope)
                if method == "POST" and path == WEBHOOK_ROUTE.path:
                    await self._serve(WEBHOOK_ROUTE, scope, receive, send)
                    return
                if method == "GET" and path.startswith(INSTANCE_PREFIX):
                    key = path[len(INSTANCE_PREFIX) :]
                    if key and "/" not in key:
                        scope["path_params"] = {"instance_id": key}
                        await self._serve(INSTANCE_ROUTE, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route
        scope["endpoint"] = route.handler
        try:
            if route.api_key:
                await record_caller(scope)
            response = await route.handler(scope, receive)
        except ServiceError as exc:
            response = await service_error_handler(Request(scope), exc)
        except Exception as exc:  # what Starlette's error middleware does for other routes
            response = await unhandled_error_handler(Request(scope), exc)
        await response(scope, receive, send)
