"""The database out of reach is a 503 with Retry-After on every route, never a 500, and
one log line per failed request without a traceback: a database
nothing answers for, connections the server drops under the service, and SQLite's write
lock held past the busy timeout."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.api.openapi import build_document
from service.clock import ManualClock
from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.ingest import InboxWriter
from service.novita import NovitaClient
from service.resources import Resources
from service.simulator import Simulator
from tests.plugins.database import OpenDatabase, postgres_admin_url
from tests.plugins.service import ServiceUnderTest, running_service, service_settings, serving
from tests.plugins.simulator import SIM_API_KEY
from tests.support.inbound_webhooks import event, signed
from tests.support.lifecycle import BODY

BODIES: dict[tuple[str, str], Any] = {
    ("post", "/api/instances"): BODY,
    ("patch", "/api/instances/{instance_id}"): {"name": "renamed"},
    ("put", "/api/instances/{instance_id}/last-used"): {},
    ("post", "/api/notifications/redeliver"): {"since": "2026-01-01T00:00:00Z"},
    ("post", "/api/webhook-targets/enable"): {"url": "https://example.com/hook"},
}
# Each of these needs the database to answer anything at all but 404/422.
NEED_THE_DATABASE = {
    ("get", "/health"),
    ("post", "/webhooks/novita"),
    ("post", "/api/instances"),
    ("get", "/api/instances"),
    ("get", "/api/instances/{instance_id}"),
    ("delete", "/api/instances/{instance_id}"),
    ("get", "/api/instances/{instance_id}/events"),
    ("put", "/api/instances/{instance_id}/last-used"),
    ("post", "/api/instances/{instance_id}/stop"),
    ("get", "/api/notifications"),
    ("get", "/api/reports/fleet"),
}


def operations() -> list[tuple[str, str]]:
    """Every documented operation, and a report."""
    found = [
        (method, path)
        for path, item in build_document()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    return [*found, ("get", "/api/reports/fleet")]


async def call(service: ServiceUnderTest, method: str, path: str, instance_id: str) -> Any:
    url = path.replace("{instance_id}", instance_id).replace("{notification_id}", "1")
    options: dict[str, Any] = {"headers": service.auth, "json": BODIES.get((method, path))}
    if (method, path) == ("post", "/webhooks/novita"):
        raw, headers = signed(service, event())
        options = {"headers": headers, "data": raw}
    async with service.http.request(method, f"{service.base_url}{url}", **options) as response:
        if response.content_type == "text/event-stream":
            return response.status, None, response.headers  # a stream: its start is enough
        text = await response.text()
        is_json = response.content_type == "application/json"
        return response.status, json.loads(text) if is_json else text, response.headers


def assert_logged_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    events = [str(r.msg) for r in caplog.records]
    assert not [e for e in events if "http.unhandled_error" in e or "Exception in ASGI" in e]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/no-such-directory/service.db"
    # A port nothing listens on: every connection is refused.
    return make_url(postgres_admin_url()).set(port=1).render_as_string(hide_password=False)


async def test_every_route_answers_503_while_the_database_is_unreachable(
    unreachable_url: str,
    simulator: Simulator,
    sim_clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    open_database: OpenDatabase,
) -> None:
    caplog.set_level(logging.INFO)
    database = open_database(unreachable_url)
    settings = service_settings(database)
    # `open_resources` checks the schema first, so it cannot open on a database nobody
    # answers for: the resources are those of a service whose database has gone since.
    novita = NovitaClient(simulator.base_url, SIM_API_KEY, clock=sim_clock, max_attempts=1)
    inbox = InboxWriter(database, sim_clock, max_queue=settings.inbound_queue_size)
    inbox.start()
    resources = Resources(
        settings=settings,
        clock=sim_clock,
        database=database,
        novita=novita,
        simulator=simulator,
        inbox=inbox,
    )
    try:
        async with serving(resources) as service:
            for method, path in operations():
                status, body, headers = await call(service, method, path, "inst_missing")
                assert status != 500, (method, path, body)
                if (method, path) in NEED_THE_DATABASE:
                    assert status == 503, (method, path, body)
                if status == 503:
                    assert int(headers["Retry-After"]) >= 1, (method, path)
    finally:
        await inbox.stop()
        await novita.close()
    assert_logged_without_traceback(caplog)
    assert [r for r in caplog.records if "http.database_unavailable" in str(r.msg)]


async def terminate_connections(database_url: str) -> int:
    """Drop every server connection of this (per-test) database, as a restart would."""
    name = make_url(database_url).database
    admin = make_url(postgres_admin_url()).set(drivername="postgresql")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        return len(
            await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        )
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_connections_dropped_by_postgresql_are_503_then_recover(
    postgres_database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url = postgres_database.engine.url.render_as_string(hide_password=False)
    async with running_service(postgres_database, simulator, sim_clock) as service:
        status, created, _ = await service.call("POST", "/api/instances", json=BODY)
        assert status == 202
        answers: list[int] = []
        for _ in range(3):
            # Warm every pool and dedicated connection, then drop them all under the service.
            for method, path in operations():
                await call(service, method, path, created["id"])
            assert await terminate_connections(url) > 0
            for method, path in operations():
                status, body, headers = await call(service, method, path, created["id"])
                assert status != 500, (method, path, body)
                if status == 503:
                    assert int(headers["Retry-After"]) >= 1
                answers.append(status)
        # (A dropped pooled connection is mostly replaced unnoticed; a 503 is allowed.)
        assert set(answers) - {503} and 500 not in answers
        # Back to normal at once: the service reconnects by itself.
        status, listed, _ = await service.call("GET", "/api/instances")
        assert status == 200 and created["id"] in [item["id"] for item in listed["items"]]
    assert_logged_without_traceback(caplog)


@pytest.fixture
async def sqlite_short_busy_timeout(tmp_path: Path, open_database: OpenDatabase) -> Database:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path}/busy.db", sqlite_busy_timeout_ms=20)
    await upgrade_to_head(database.engine)
    return database


async def test_sqlite_write_lock_contention_is_503_never_500(
    sqlite_short_busy_timeout: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = sqlite_short_busy_timeout
    async with running_service(database, simulator, sim_clock) as service:
        # Another writer holds the lock past the busy timeout: creates are 503, not 500.
        async with database.transaction() as conn:
            await conn.exec_driver_sql("DELETE FROM leases WHERE 1 = 0")
            for _ in range(3):
                status, body, headers = await service.call("POST", "/api/instances", json=BODY)
                assert status == 503, body
                assert body["error"]["code"] == "DATABASE_UNAVAILABLE"
                assert int(headers["Retry-After"]) >= 1

        # A burst of creates at high concurrency: each is stored or told to retry.
        async def create(http: aiohttp.ClientSession) -> tuple[int, str | None]:
            async with http.post(
                f"{service.base_url}/api/instances", json=BODY, headers=service.auth
            ) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")

        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            answers = await asyncio.gather(*(create(http) for _ in range(300)))
    assert {status for status, _ in answers} <= {202, 503}, answers
    assert all(retry for status, retry in answers if status == 503)
    assert sum(status == 202 for status, _ in answers) > 0
    assert_logged_without_traceback(caplog)
