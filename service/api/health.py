"""`GET /health`: is the service able to do its job right now (200) or not (503)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from service import __version__
from service.resources import Resources


async def health(request: Request) -> JSONResponse:
    resources: Resources = request.state.resources
    database_up = await resources.database.ping()
    checks = {
        "database": {
            "status": "up" if database_up else "down",
            "engine": resources.database.dialect,
        },
    }
    ready = database_up
    body = {"status": "ok" if ready else "unavailable", "version": __version__, "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)
