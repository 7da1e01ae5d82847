"""`GET /metrics`: Prometheus text format (unauthenticated, like /health; no secrets)."""

from __future__ import annotations

from dataclasses import replace

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from service.db.stats import service_counts
from service.db.status_ages import TRANSITIONAL_STATUSES, oldest_entry_by_status
from service.metrics import ServiceCollector, Snapshot
from service.resources import Resources

log = structlog.get_logger(__name__)


async def metrics(request: Request) -> Response:
    resources: Resources = request.state.resources
    collector: ServiceCollector = request.state.metrics_collector
    now = resources.clock.now()
    try:
        async with resources.database.read() as conn:
            counts = await service_counts(conn)
            entered = await oldest_entry_by_status(conn)
    except Exception as exc:  # the database is down: say so, and still show everything else
        log.warning("metrics.database_unreachable", error=type(exc).__name__)
        collector.snapshot = replace(collector.snapshot, database_up=False)
    else:
        oldest = counts.oldest_pending_notification
        collector.snapshot = Snapshot(
            instances_by_status=counts.instances_by_status,
            outbox_by_status=counts.outbox_by_status,
            oldest_pending_notification_age=(now - oldest).total_seconds() if oldest else 0.0,
            inbox_backlog=counts.inbox_backlog,
            oldest_in_status={
                status.value: max(
                    (now - entered[status.value]).total_seconds()
                    if status.value in entered
                    else 0.0,
                    0.0,
                )
                for status in TRANSITIONAL_STATUSES
            },
            database_up=True,
        )
    return Response(generate_latest(request.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
