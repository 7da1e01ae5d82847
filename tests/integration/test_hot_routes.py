"""The hot routes run every middleware Starlette would: the app's own and the /api mount's.

Each case adds a middleware that answers by itself (418 and its label); if the hot path
skipped it, the request would reach the endpoint and answer something else.
"""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.hot_routes import ApiMount
from service.api.instances import ROUTES as instance_routes
from service.api.webhooks import ROUTES as webhook_routes
from service.app import ServiceApp
from service.metrics import HttpMetrics
from tests.support.server import running_server


class Answers:
    """A middleware that answers every HTTP request itself."""

    def __init__(self, app: ASGIApp, label: str) -> None:
        self.app = app
        self.label = label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await PlainTextResponse(self.label, status_code=418)(scope, receive, send)


def app_with(
    api_middleware: list[Middleware], app_middleware: list[Middleware] | None = None
) -> ServiceApp:
    return ServiceApp(
        HttpMetrics(CollectorRegistry()),
        routes=[*webhook_routes, ApiMount(routes=instance_routes, middleware=api_middleware)],
        middleware=app_middleware,
    )


async def answer(base_url: str, method: str, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url + path, data=b"{}") as response,
    ):
        return response.status, await response.text()


async def test_a_middleware_added_to_the_api_mount_runs_on_the_hot_instance_route() -> None:
    app = app_with([Middleware(Answers, label="api")])
    async with running_server(app) as base_url:
        assert await answer(base_url, "GET", "/api/instances/inst_1") == (418, "api")
        assert await answer(base_url, "GET", "/api/instances") == (418, "api")  # not hot
        # The webhook is not under /api: the mount's middleware is not its business.
        status, _ = await answer(base_url, "POST", "/webhooks/novita")
        assert status != 418


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/instances/inst_1"), ("POST", "/webhooks/novita")]
)
async def test_a_middleware_added_to_the_app_runs_on_both_hot_routes(
    method: str, path: str
) -> None:
    app = app_with([], app_middleware=[Middleware(Answers, label="app")])
    async with running_server(app) as base_url:
        assert await answer(base_url, method, path) == (418, "app")


def test_an_api_mount_that_does_not_say_its_middleware_is_refused() -> None:
    app = ServiceApp(
        HttpMetrics(CollectorRegistry()), routes=[Mount("/api", routes=instance_routes)]
    )
    with pytest.raises(TypeError, match="ApiMount"):
        app.build_middleware_stack()
