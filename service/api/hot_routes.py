"""A direct route to the two endpoints that carry nearly all traffic.

`GET /api/instances/{id}` (clients polling their instances) and `POST /webhooks/novita`
(the provider's event stream) are dispatched here, ahead of Starlette's exception
middleware, router and mount. They run the very same endpoint functions, behind the same
API-key check, and their errors go through the same handlers as everywhere else; what is
skipped is only the generic machinery (route tables, nested middleware, per-layer send
wrappers), which otherwise costs more than the endpoints' own work. Every other request,
and HEAD on these paths, goes on to the router unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import authenticate
from service.api.errors import service_error_handler
from service.api.instances import get_instance
from service.api.webhooks import receive_novita_webhook
from service.errors import ServiceError

Endpoint = Callable[[Request], Awaitable[Response]]
INSTANCE_PREFIX = "/api/instances/"


@dataclass(frozen=True, slots=True)
class HotRoute:
    """What the metrics label a request with (`path`), like a Starlette route."""

    path: str
    endpoint: Endpoint
    api_key: bool


INSTANCE_ROUTE = HotRoute("/api/instances/{instance_id}", get_instance, api_key=True)
WEBHOOK_ROUTE = HotRoute("/webhooks/novita", receive_novita_webhook, api_key=False)


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
            if method == "GET" or method == "POST":
                path = route_path(scope)
                if method == "POST" and path == WEBHOOK_ROUTE.path:
                    await self._serve(WEBHOOK_ROUTE, {}, scope, receive, send)
                    return
                if method == "GET" and path.startswith(INSTANCE_PREFIX):
                    key = path[len(INSTANCE_PREFIX) :]
                    if key and "/" not in key:
                        params = {"instance_id": key}
                        await self._serve(INSTANCE_ROUTE, params, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(
        route: HotRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        scope["route"] = route
        scope["path_params"] = params
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive)
        try:
            if route.api_key:
                state = scope["state"]
                keys = state["resources"].settings.api_key_values()
                state["caller"] = authenticate(request, keys)
            response = await route.endpoint(request)
        except ServiceError as exc:
            response = await service_error_handler(request, exc)
        await response(scope, receive, send)
