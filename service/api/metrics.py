"""`GET /metrics`: Prometheus text format (unauthenticated, like /health; no secrets).

The database figures come from the last reading of `service.fleet_figures` (taken every
few seconds in the background), so a scrape runs no query: polling it costs the database
nothing. `database_up` is 0 when that reading failed.
"""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from service.db.status_ages import TRANSITIONAL_STATUSES
from service.metrics import ServiceCollector, Snapshot
from service.resources import Resources


async def metrics(request: Request) -> Response:
    resources: Resources = request.state.resources
    collector: ServiceCollector = request.state.metrics_collector
    now = resources.clock.now()
    reading = resources.figures.latest
    counts = reading.counts if reading is not None else None
    if reading is None or counts is None:  # the database did not answer the last reading
        collector.snapshot = replace(collector.snapshot, database_up=False)
    else:
        oldest = counts.oldest_pending_notification
        unapplied = counts.oldest_unapplied_webhook
        entered = reading.entered
        collector.snapshot = Snapshot(
            instances_by_status=counts.instances_by_status,
            outbox_by_status=counts.outbox_by_status,
            oldest_pending_notification_age=max((now - oldest).total_seconds(), 0.0)
            if oldest
            else 0.0,
            inbox_backlog=counts.inbox_backlog,
            oldest_unapplied_webhook_age=max((now - unapplied).total_seconds(), 0.0)
            if unapplied
            else 0.0,
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
