"""Options in a PostgreSQL DATABASE_URL mean what SQLAlchemy's asyncpg dialect says, on
every path the service reads and writes through (the hot ones included)."""

from __future__ import annotations

import pytest

from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from tests.plugins.database import OpenDatabase
from tests.plugins.service import ServiceUnderTest
from tests.support.api import create
from tests.support.inbound_webhooks import event, post, signed, stored

pytestmark = pytest.mark.postgres

# pgbouncer in transaction mode needs SQLAlchemy's statement cache off.
PGBOUNCER_OPTIONS = "prepared_statement_cache_size=0&ssl=disable"


@pytest.fixture
async def database(postgres_url: str, open_database: OpenDatabase) -> Database:
    """The `service` fixture's database, reached through a URL with options."""
    database = open_database(f"{postgres_url}?{PGBOUNCER_OPTIONS}")
    await upgrade_to_head(database.engine)
    return database


async def test_an_instance_is_read_by_id_with_the_statement_cache_off(
    service: ServiceUnderTest,
) -> None:
    created = await create(service)
    for _ in range(2):  # the second read may reuse the rendered body
        status, body, _ = await service.call("GET", f"/api/instances/{created['id']}")
        assert status == 200 and body["id"] == created["id"]
    status, _, _ = await service.call("GET", "/api/instances/inst_missing")
    assert status == 404


async def test_webhooks_are_stored_with_the_statement_cache_off(
    service: ServiceUnderTest,
) -> None:
    raw, headers = signed(service, event())
    status, body = await post(service, raw, headers)
    assert status == 200 and body == {"received": True, "duplicate": False}
    status, body = await post(service, raw, headers)
    assert status == 200 and body == {"received": True, "duplicate": True}
    assert [row["webhook_id"] for row in await stored(service)] == [headers["webhook-id"]]
