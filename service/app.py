"""The composition root: `create_app(settings)` builds the Starlette application.

Nothing is opened at import or construction time; the lifespan opens resources (or uses
the ones a test hands in, without closing them) and exposes them as request state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp

from service.api.auth import ApiKeyMiddleware, Authenticator
from service.api.edge import EdgeMiddleware
from service.api.errors import EXCEPTION_HANDLERS
from service.api.event_stream import ROUTES as event_routes
from service.api.health import health
from service.api.hot_routes import ApiMount, HotRoutes
from service.api.instances import ROUTES as instance_routes
from service.api.keys import ROUTES as key_routes
from service.api.metrics import metrics
from service.api.notifications import ROUTES as notification_routes
from service.api.openapi import openapi
from service.api.reports import ROUTES as report_routes
from service.api.webhooks import ROUTES as webhook_routes
from service.dashboard.routes import dashboard_mount
from service.event_hub import EventHub
from service.logging import register_secrets, secret_forms
from service.metrics import HttpMetrics, ServiceCollector
from service.resources import Resources, open_resources
from service.settings import Settings
from service.workers.loop import WorkerGroup
from service.workers.registry import build_worker_loops


def create_app(
    settings: Settings,
    resources: Resources | None = None,
    *,
    migrate: bool = False,
    run_workers: bool = True,
) -> ServiceApp:
    """Build the app. With `run_workers`, the lifespan also runs every background worker
    (stopped, each finishing its batch, before the resources close)."""
    register_secrets(secret_forms(settings))  # whoever configured logging, scrub these

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        opened: AbstractAsyncContextManager[Resources] = (
            nullcontext(resources)
            if resources is not None
            else open_resources(settings, migrate=migrate)
        )
        async with opened as live:
            workers = WorkerGroup(build_worker_loops(live) if run_workers else [])
            collector = ServiceCollector(live, workers)
            registry.register(collector)
            event_hub = EventHub(
                live.database, poll_interval=settings.event_stream_poll_interval
            )
            await live.figures.start()
            workers.start()
            try:
                yield {
                    "resources": live,
                    "workers": workers,
                    "metrics_registry": registry,
                    "metrics_collector": collector,
                    "event_hub": event_hub,
                    "authenticator": Authenticator(live),
                }
            finally:
                await event_hub.close()
                await workers.stop()
                await live.figures.stop()
                registry.unregister(collector)

    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *webhook_routes,
        ApiMount(
            routes=[
                *instance_routes,
                *notification_routes,
                *report_routes,
                *event_routes,
                *key_routes,
            ],
            middleware=[Middleware(ApiKeyMiddleware)],
        ),
        dashboard_mount(),
    ]
    return ServiceApp(
        http_metrics,
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )


class ServiceApp(Starlette):
    """Starlette with two layers in front of its whole stack, error middleware included:
    the edge (request id, metrics), so every answer carries both, even a 500; then the hot
    routes, which answer the two busiest endpoints without the generic machinery (but
    inside the app's and the /api mount's own middleware, see `service.api.hot_routes`)."""

    def __init__(self, http_metrics: HttpMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http_metrics = http_metrics

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        hot = HotRoutes.for_routes(inner, self.routes, self.user_middleware)
        return EdgeMiddleware(hot, self._http_metrics)
