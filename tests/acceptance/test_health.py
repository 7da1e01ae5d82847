"""`/health` over real HTTP: 200 with the database up, 503 when it does not answer."""

from __future__ import annotations

import aiohttp

from service.app import create_app
from service.clock import SystemClock
from service.db.engine import Database
from service.resources import Resources
from service.settings import load_settings
from tests.support.server import running_server


async def test_health_reports_the_database_up(database: Database) -> None:
    settings = load_settings(database_url=str(database.engine.url), novita_simulator=True)
    resources = Resources(settings=settings, clock=SystemClock(), database=database)
    async with running_server(create_app(settings, resources)) as base_url:
        async with aiohttp.ClientSession() as http, http.get(f"{base_url}/health") as response:
            body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "up"


async def test_health_is_503_when_the_database_does_not_answer() -> None:
    # Nothing listens on port 1: every connection attempt is refused.
    url = "postgresql+asyncpg://nobody:pw@127.0.0.1:1/none"
    settings = load_settings(database_url=url, novita_simulator=True)
    database = Database.from_url(url)
    resources = Resources(settings=settings, clock=SystemClock(), database=database)
    try:
        async with running_server(create_app(settings, resources)) as base_url:
            async with aiohttp.ClientSession() as http, http.get(f"{base_url}/health") as response:
                body = await response.json()
    finally:
        await database.close()
    assert response.status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "down"
    assert "nobody" not in str(body) and "pw" not in str(body), "no credentials in /health"


async def test_unknown_route_gets_the_error_body(database: Database) -> None:
    settings = load_settings(database_url=str(database.engine.url), novita_simulator=True)
    resources = Resources(settings=settings, clock=SystemClock(), database=database)
    async with running_server(create_app(settings, resources)) as base_url:
        async with aiohttp.ClientSession() as http, http.get(f"{base_url}/nope") as response:
            body = await response.json()
    assert response.status == 404
    assert body["error"]["code"] == "NOT_FOUND"
