"""`GET /health`: is the service able to do its job right now (200) or not (503).

It names states, never hosts, URLs or credentials.
"""

from __future__ import annotations

from starlette.requests import Request

from service import __version__
from service.api.responses import JSONResponse
from service.resources import Resources


async def health(request: Request) -> JSONResponse:
    resources: Resources = request.state.resources
    database_up = await resources.database.ping()
    novita = resources.novita.status()
    checks = {
        "database": {
            "status": "up" if database_up else "down",
            "engine": resources.database.dialect,
        },
        "novita": {
            "mode": "simulator" if resources.simulator is not None else "novita",
            "breaker": novita.breaker_state,
            "breakerRetryAfter": novita.breaker_retry_after,
            "limiterBacklog": novita.limiter_backlog,
            "requests": novita.requests,
            "retries": novita.retries,
            "errors": novita.errors,
        },
    }
    # An open breaker degrades provisioning but reads and webhooks still work: not a 503.
    ready = database_up
    status = "ok" if ready and novita.breaker_state == "closed" else "degraded"
    body = {
        "status": status if ready else "unavailable",
        "version": __version__,
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
