"""`GET /metrics`: Prometheus text format (unauthenticated, like /health; no secrets)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from service.db.stats import service_counts
from service.metrics import ServiceCollector, Snapshot
from service.resources import Resources


async def metrics(request: Request) -> Response:
    resources: Resources = request.state.resources
    collector: ServiceCollector = request.state.metrics_collector
    async with resources.database.read(inline=False) as conn:
        counts = await service_counts(conn)
    now = resources.clock.now()
    oldest = counts.oldest_pending_notification
    collector.snapshot = Snapshot(
        instances_by_status=counts.instances_by_status,
        outbox_by_status=counts.outbox_by_status,
        oldest_pending_notification_age=(now - oldest).total_seconds() if oldest else 0.0,
        inbox_backlog=counts.inbox_backlog,
    )
    return Response(generate_latest(request.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
