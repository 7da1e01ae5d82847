"""`GET /health`: liveness and readiness of this process.

It reads nothing from the database itself: the counts come from the last reading of
`FleetFigures` (at most a few seconds old), so calling it costs the database nothing.
200 while the database answers (`status` is `degraded` when something needs attention but
the service still works: the Novita breaker not closed, a worker paused or overdue); 503
when it does not. It names states and ages, never hosts, URLs or credentials.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from service import __version__
from service.api.responses import JSONResponse
from service.db.health_counts import Stuck
from service.errors import RETRY_AFTER_SECONDS, retry_after_header
from service.resources import Resources
from service.settings import Settings


def _age(now: Any, then: Any) -> float | None:
    return round((now - then).total_seconds(), 3) if then is not None else None


def _worker_checks(request: Request, now: Any) -> dict[str, dict[str, Any]]:
    group = getattr(request.state, "workers", None)
    checks: dict[str, dict[str, Any]] = {}
    for loop in getattr(group, "loops", []):
        checks[loop.worker.name] = loop.figures(now)
    return checks


def _stuck_check(stuck: dict[str, Stuck], now: Any, settings: Settings) -> dict[str, Any]:
    """Instances waiting longer than STUCK_INSTANCE_SECONDS in `pending`/`provisioning`."""
    check: dict[str, Any] = {"thresholdSeconds": settings.stuck_instance_seconds}
    for status, entry in stuck.items():
        check[status] = {
            "count": entry.count,
            "oldestAgeSeconds": _age(now, entry.oldest_since),
        }
    return check


async def health(request: Request) -> JSONResponse:
    resources: Resources = request.state.resources
    now = resources.clock.now()
    checks: dict[str, Any] = {}
    reading = resources.figures.latest  # taken before the app served its first request
    counts = reading.counts if reading else None
    stuck = reading.stuck if reading else {}
    database_up = counts is not None
    checks["database"] = {
        "status": "up" if database_up else "down",
        "engine": resources.database.dialect,
        "figuresAgeSeconds": _age(now, reading.taken_at) if reading else None,
    }
    novita = resources.novita.status()
    checks["novita"] = {
        "mode": "simulator" if resources.simulator is not None else "novita",
        "breaker": novita.breaker_state,
        "breakerRetryAfter": novita.breaker_retry_after,
        "limiterBacklog": novita.limiter_backlog,
        "requests": novita.requests,
        "retries": novita.retries,
        "errors": novita.errors,
    }
    if counts is not None:
        checks["outbox"] = {
            "pending": counts.outbox_by_status.get("pending", 0),
            "failed": counts.outbox_by_status.get("failed", 0),
            "oldestPendingAgeSeconds": _age(now, counts.oldest_pending_notification),
        }
        checks["inbox"] = {
            "backlog": counts.inbox_backlog,
            "oldestUnappliedAgeSeconds": _age(now, counts.oldest_unapplied_webhook),
            "ingestQueue": resources.inbox.backlog if resources.inbox else None,
        }
        checks["stuckInstances"] = _stuck_check(stuck, now, resources.settings)
    workers = _worker_checks(request, now)
    if workers:
        checks["workers"] = workers
    degraded = (
        novita.breaker_state != "closed"
        or any(entry.get("paused") or entry.get("overdue") for entry in workers.values())
        or any(entry.count for entry in stuck.values())
    )
    status = "unavailable" if not database_up else "degraded" if degraded else "ok"
    body = {"status": status, "version": __version__, "checks": checks}
    if database_up:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers=retry_after_header(RETRY_AFTER_SECONDS))
