"""`/health` over real HTTP: 200 with the database up, 503 when it does not answer."""

from __future__ import annotations

from typing import Any

import aiohttp
from sqlalchemy import event

from service.app import create_app
from service.clock import SystemClock
from service.db.engine import Database
from service.novita import NovitaClient
from service.resources import Resources
from service.settings import load_settings
from tests.plugins.database import OpenDatabase
from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import BODY
from tests.support.server import running_server


def url_of(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_full_lifespan_with_the_built_in_simulator(database: Database) -> None:
    """create_app opens the database, starts the simulator and the client, then closes them."""
    settings = load_settings(database_url=url_of(database), novita_simulator=True)
    app = create_app(settings)
    async with running_server(app) as base_url:
        status, body = await get_json(f"{base_url}/health")
    assert status == 200, body
    assert body["status"] == "ok"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["database"]["status"] == "up"
    assert checks["novita"]["mode"] == "simulator"
    assert checks["novita"]["breaker"] == "closed"
    workers = checks["workers"]
    expected = {
        "provisioner",
        "reconciler",
        "relister",
        "readiness",
        "applier",
        "notifier",
        "policy",
        "retention",
    }
    assert expected <= set(workers), workers
    assert workers["relister"]["isLeader"] in (True, False)
    assert "paused" in workers["reconciler"]
    assert "127.0.0.1" not in str(body), "no hostnames in /health"


async def test_health_is_503_when_the_database_does_not_answer(
    open_database: OpenDatabase,
) -> None:
    # Nothing listens on port 1: every connection attempt is refused.
    url = "postgresql+asyncpg://nobody:pw@127.0.0.1:1/none"
    settings = load_settings(database_url=url, novita_simulator=True)
    database = open_database(url)
    novita = NovitaClient("http://127.0.0.1:9/unused", "unused-key")
    resources = Resources(settings=settings, clock=SystemClock(), database=database, novita=novita)
    try:
        async with running_server(create_app(settings, resources)) as base_url:
            status, body = await get_json(f"{base_url}/health")
    finally:
        await novita.close()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "down"  # type: ignore[index]
    assert "nobody" not in str(body) and "unused-key" not in str(body)


async def test_unknown_route_gets_the_error_body(database: Database) -> None:
    settings = load_settings(database_url=url_of(database), novita_simulator=True)
    async with running_server(create_app(settings)) as base_url:
        status, body = await get_json(f"{base_url}/nope")
    assert status == 404
    assert body["error"]["code"] == "NOT_FOUND"  # type: ignore[index]


async def test_health_sends_no_statement_to_the_database(service: ServiceUnderTest) -> None:
    """Unauthenticated and polled often, /health answers from the figures a background
    task keeps; calling it costs the database nothing."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    engine = service.resources.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            status, body, _ = await service.call("GET", "/health", auth=False)
            assert status == 200 and body["checks"]["database"]["status"] == "up"
            assert body["checks"]["outbox"]["pending"] == 0
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []


async def test_health_counts_follow_the_figures_kept_in_the_background(
    service: ServiceUnderTest,
) -> None:
    figures = service.resources.figures
    status, body, _ = await service.call("POST", "/api/instances", json=BODY)
    assert status == 202, body
    await figures.refresh()
    _, health, _ = await service.call("GET", "/health", auth=False)
    assert health["checks"]["outbox"]["pending"] == 1
    assert health["checks"]["database"]["figuresAgeSeconds"] == 0
    service.clock.advance(3)
    _, health, _ = await service.call("GET", "/health", auth=False)
    assert health["checks"]["database"]["figuresAgeSeconds"] == 3
