"""A direct route to the two endpoints that carry nearly all traffic.

`GET /api/instances/{id}` (clients polling their instances) and `POST /webhooks/novita`
(the provider's event stream) are dispatched here, ahead of Starlette's whole stack
(its error middleware, exception middleware, router and mount). They run the very same
endpoint code, and their errors go through the same handlers as everywhere else; what is
skipped is only the generic machinery (route tables, per-layer send wrappers), which
otherwise costs more than the endpoints' own work. Every other request, and HEAD on these
paths, goes on to Starlette.

Middleware is never skipped: `HotRoutes` is built from the app's own middleware and the
`/api` mount's (`ApiMount` keeps its list), and wraps each hot endpoint in the same
classes, in the same order, as Starlette would. Adding a middleware to the app or to the
mount is therefore enough for the hot routes to run it too (tests/unit/test_hot_routes.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import service_error_handler, unhandled_error_handler
from service.api.instances import get_instance
from service.api.webhooks import ingest_webhook
from service.errors import ServiceError

Handler = Callable[[Scope, Receive], Awaitable[Response]]
INSTANCE_PREFIX = "/api/instances/"


async def _instance(scope: Scope, receive: Receive) -> Response:
    return await get_instance(Request(scope, receive))


class ApiMount(Mount):
    """The `/api` mount, keeping the middleware it was given so the hot routes can run it."""

    def __init__(self, routes: Sequence[BaseRoute], middleware: Sequence[Middleware]) -> None:
        super().__init__("/api", routes=routes, middleware=middleware)
        self.middleware = tuple(middleware)


@dataclass(frozen=True, slots=True)
class HotRoute:
    """What the metrics label a request with (`path`), like a Starlette route."""

    path: str
    handler: Handler
    under_api: bool  # behind the /api mount's middleware (API key and role)


INSTANCE_ROUTE = HotRoute("/api/instances/{instance_id}", _instance, under_api=True)
WEBHOOK_ROUTE = HotRoute("/webhooks/novita", ingest_webhook, under_api=False)


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (what Starlette's router matches on)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _wrapped(app: ASGIApp, middleware: Sequence[Middleware]) -> ASGIApp:
    """`app` inside `middleware`, the first outermost (as Starlette builds a stack)."""
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    return app


def _endpoint(route: HotRoute) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await route.handler(scope, receive)
        await response(scope, receive, send)

    return app


class HotRoutes:
    def __init__(
        self,
        app: ASGIApp,
        *,
        app_middleware: Sequence[Middleware] = (),
        api_middleware: Sequence[Middleware] = (),
    ) -> None:
        self.app = app
        self._instance = _wrapped(_endpoint(INSTANCE_ROUTE), [*app_middleware, *api_middleware])
        self._webhook = _wrapped(_endpoint(WEBHOOK_ROUTE), app_middleware)

    @classmethod
    def for_routes(
        cls, app: ASGIApp, routes: Sequence[BaseRoute], app_middleware: Sequence[Middleware]
    ) -> HotRoutes:
        """The hot routes of an app whose routes are `routes`: the `/api` mount must be an
        `ApiMount`, so that its middleware is known here."""
        mounts = [r for r in routes if isinstance(r, Mount) and r.path == "/api"]
        if len(mounts) != 1 or not isinstance(mounts[0], ApiMount):
            raise TypeError("the app needs exactly one /api mount, and it must be an ApiMount")
        return cls(app, app_middleware=app_middleware, api_middleware=mounts[0].middleware)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST" or method == "GET":
                path = route_path(scope)
                if method == "POST" and path == WEBHOOK_ROUTE.path:
                    await _serve(WEBHOOK_ROUTE, self._webhook, scope, receive, send)
                    return
                if method == "GET" and path.startswith(INSTANCE_PREFIX):
                    key = path[len(INSTANCE_PREFIX) :]
                    if key and "/" not in key:
                        scope["path_params"] = {"instance_id": key}
                        await _serve(INSTANCE_ROUTE, self._instance, scope, receive, send)
                        return
        await self.app(scope, receive, send)


async def _serve(
    route: HotRoute, stack: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    scope["route"] = route
    scope["endpoint"] = route.handler
    started = False

    async def sending(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await stack(scope, receive, sending)
    except Exception as exc:  # what Starlette's error middlewares do for other routes
        if started:  # too late for an error answer: the server closes the connection
            raise
        if isinstance(exc, ServiceError):
            response = await service_error_handler(Request(scope), exc)
        else:
            response = await unhandled_error_handler(Request(scope), exc)
        await response(scope, receive, send)
