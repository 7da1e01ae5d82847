"""The API's point read of one instance: what it derives from a row is reused only while
the row is unchanged, and on PostgreSQL concurrent lookups share their round trips."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Instance, Status
from tests.plugins.database import OpenDatabase
from tests.support.instance_rows import T0, create
from tests.support.postgres import terminate_other_backends
from tests.support.statements import sent_statements


class Renders:
    """A derive function that counts how often it really ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, instance: Instance) -> tuple[str, str]:
        self.calls += 1
        return instance.id, instance.status.value


async def test_a_derived_value_is_reused_only_while_the_row_is_unchanged(
    database: Database,
) -> None:
    instance_id = await create(database)
    render = Renders()

    first = await repo.find_instance_derived(database, instance_id, render)
    again = await repo.find_instance_derived(database, instance_id, render)
    assert first == again == (instance_id, "pending")
    assert render.calls == 1

    async with database.transaction() as conn:
        await repo.change_status(
            conn,
            instance_id,
            Status.PROVISIONING,
            source=EventSource.PROVISIONER,
            now=T0 + timedelta(seconds=1),
        )
    assert await repo.find_instance_derived(database, instance_id, render) == (
        instance_id,
        "provisioning",
    )
    assert render.calls == 2
    assert await repo.find_instance_derived(database, "inst_missing", render) is None


async def test_a_change_that_is_not_a_transition_is_seen_too(database: Database) -> None:
    """The reuse check compares the whole row, so any column changing counts."""
    instance_id = await create(database)
    seen: list[object] = []

    def last_used(instance: Instance) -> object:
        seen.append(instance.last_used_at)
        return instance.last_used_at

    assert await repo.find_instance_derived(database, instance_id, last_used) is None
    async with database.transaction() as conn:
        await repo.set_last_used(
            conn, instance_id, at=T0 + timedelta(minutes=3), now=T0 + timedelta(minutes=3)
        )
    assert await repo.find_instance_derived(database, instance_id, last_used) == T0 + timedelta(
        minutes=3
    )
    assert len(seen) == 2


@pytest.mark.postgres
async def test_concurrent_lookups_share_queries_and_each_gets_its_own_row(
    postgres_database: Database,
) -> None:
    database = postgres_database
    ids = [await create(database, name=f"trainer-{n}") for n in range(20)]
    reader = database.point_reader
    assert reader is not None
    keys = [*ids, *ids, "inst_missing", "also-missing"]

    found = await asyncio.gather(*(reader.find(key) for key in keys))

    assert [row["id"] if row else None for row in found] == [*ids, *ids, None, None]
    lookup = reader._lookup
    assert lookup is not None
    assert 1 <= lookup.queries < len(keys) / 4, lookup.queries


@pytest.mark.postgres
async def test_a_requester_giving_up_leaves_the_others_their_answer(
    postgres_database: Database,
) -> None:
    database = postgres_database
    instance_id = await create(database)
    reader = database.point_reader
    assert reader is not None
    impatient = asyncio.ensure_future(reader.find(instance_id))
    patient = asyncio.ensure_future(reader.find(instance_id))
    await asyncio.sleep(0)
    impatient.cancel()

    row = await patient
    assert row is not None and row["id"] == instance_id
    assert impatient.cancelled()


@pytest.mark.postgres
async def test_a_connection_killed_while_idle_is_replaced_without_an_error(
    postgres_database: Database, postgres_url: str
) -> None:
    database = postgres_database
    instance_id = await create(database)
    reader = database.point_reader
    assert reader is not None
    assert await reader.find(instance_id) is not None
    assert await terminate_other_backends(postgres_url) >= 1

    row = await reader.find(instance_id)
    assert row is not None and row["id"] == instance_id


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("options", "through_sqlalchemy"),
    [("", False), ("?prepared_statement_cache_size=0", True)],
    ids=["default", "statement-cache-off"],
)
async def test_the_statement_cache_option_decides_who_executes_the_point_read(
    postgres_database: Database,
    postgres_url: str,
    open_database: OpenDatabase,
    options: str,
    through_sqlalchemy: bool,
) -> None:
    """By default the read is sent on the pooled connection's asyncpg connection (not
    SQLAlchemy's execution); with SQLAlchemy's prepared-statement cache off (pgbouncer),
    SQLAlchemy executes it, so the option keeps its meaning. Same row either way."""
    instance_id = await create(postgres_database)
    async with postgres_database.read() as conn:
        expected = await repo.find_instance(conn, instance_id)
    database = open_database(f"{postgres_url}{options}")
    with sent_statements(database) as sent:
        found = await repo.find_instance_fast(database, instance_id)
    assert found == expected
    assert sent == (["SELECT"] if through_sqlalchemy else [])
