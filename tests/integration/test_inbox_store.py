"""Every inbox store (SQLAlchemy, and the driver-level ones for SQLite and PostgreSQL)
stores a batch the same way: new ids inserted once, duplicates counted in the same
commit, rows that read back exactly as the webhook was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.db import inbox
from service.db.engine import Database
from service.db.inbox_store import (
    InboxStore,
    PostgresInboxStore,
    SqlAlchemyInboxStore,
    SqliteInboxStore,
    open_store,
)
from service.db.migrations import upgrade_to_head
from service.db.models import webhook_tallies
from tests.plugins.database import OpenDatabase
from tests.support.inbox_rows import NOW, record
from tests.support.postgres import terminate_other_backends


def driver_store(database: Database) -> InboxStore:
    return open_store(database)


def sqlalchemy_store(database: Database) -> InboxStore:
    return SqlAlchemyInboxStore(database)


STORES = pytest.mark.parametrize(
    "make_store", [driver_store, sqlalchemy_store], ids=["driver", "sqlalchemy"]
)


async def duplicates_counted(database: Database) -> int:
    async with database.read() as conn:
        total = await conn.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(webhook_tallies.c.count), 0)).where(
                webhook_tallies.c.outcome == "duplicate"
            )
        )
    return int(total or 0)


async def test_the_driver_store_is_the_one_opened_for_a_file_or_server(database: Database) -> None:
    store = open_store(database)
    try:
        expected = PostgresInboxStore if database.dialect == "postgresql" else SqliteInboxStore
        assert isinstance(store, expected)
    finally:
        await store.close()


@STORES
async def test_new_ids_are_stored_and_known_ones_counted_as_duplicates(
    database: Database, make_store: Callable[[Database], InboxStore]
) -> None:
    store = make_store(database)
    try:
        first = await store.store([record(1), record(2)], duplicates=0, now=NOW)
        # msg_2 is known already; one more duplicate was dropped within the batch itself.
        second = await store.store([record(2), record(3)], duplicates=1, now=NOW)
    finally:
        await store.close()

    assert first == {"msg_1", "msg_2"}
    assert second == {"msg_3"}
    assert await duplicates_counted(database) == 2
    async with database.read() as conn:
        rows = await inbox.claim_unprocessed(conn, limit=10)
    assert [row.webhook_id for row in rows] == ["msg_1", "msg_2", "msg_3"]
    assert rows[2].payload == json.loads(record(3).payload_json)
    assert rows[2].provider_instance_id == "i3"
    assert rows[2].received_at == NOW


@STORES
async def test_a_batch_with_nothing_new_still_counts_its_duplicates(
    database: Database, make_store: Callable[[Database], InboxStore]
) -> None:
    store = make_store(database)
    try:
        await store.store([record(1)], duplicates=0, now=NOW)
        assert await store.store([record(1)], duplicates=2, now=NOW) == set()
    finally:
        await store.close()
    assert await duplicates_counted(database) == 3


async def test_concurrent_batches_with_the_same_ids_store_each_once(database: Database) -> None:
    store = open_store(database)
    try:
        results = await asyncio.gather(
            *(store.store([record(n) for n in range(40)], duplicates=0, now=NOW) for _ in range(4))
        )
    finally:
        await store.close()
    inserted = [webhook_id for result in results for webhook_id in result]
    assert sorted(inserted) == sorted(f"msg_{n}" for n in range(40))
    assert await duplicates_counted(database) == 3 * 40


async def test_sqlite_checkpoints_run_beside_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_database: OpenDatabase
) -> None:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path}/checkpoints.db")
    await upgrade_to_head(database.engine)
    store = open_store(database)
    assert isinstance(store, SqliteInboxStore)
    monkeypatch.setattr(store, "checkpoint_rows", 10)
    try:
        for start in range(0, 50, 10):
            batch = [record(n) for n in range(start, start + 10)]
            await store.store(batch, duplicates=0, now=NOW)
    finally:
        await store.close()
    assert store.checkpoints >= 1
    async with database.read() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM inbound_webhooks")) == 50


async def test_a_second_batch_starts_beside_a_slow_one_only_once_enough_wait(
    database: Database,
) -> None:
    """While a batch is stuck, one more event waits; `min_overlap` events start another
    batch beside it where the store allows several (PostgreSQL), never on SQLite."""
    from service.clock import SystemClock
    from service.ingest import InboxWriter
    from tests.support.inbound_webhooks import until

    writer = InboxWriter(database, SystemClock(), min_overlap=4)
    writer.start()

    try:
        async with database.transaction() as conn:
            if database.is_sqlite:  # hold the write lock: the first batch waits behind it
                await conn.execute(sa.text("DELETE FROM leases WHERE 1 = 0"))
            else:
                await conn.execute(sa.text("LOCK TABLE inbound_webhooks IN EXCLUSIVE MODE"))
            submitted = [asyncio.ensure_future(writer.submit(record(0)))]
            await until(lambda: writer.submitted == 1 and writer.backlog == 0)
            submitted.append(asyncio.ensure_future(writer.submit(record(1))))
            await until(lambda: writer.backlog == 1)
            await asyncio.sleep(0.05)
            assert writer.backlog == 1, "one waiting event starts no second batch"
            submitted += [asyncio.ensure_future(writer.submit(record(n))) for n in range(2, 5)]
            if writer.max_in_flight > 1:
                await until(lambda: writer.backlog == 0)  # four waiting: a second batch
            else:
                await asyncio.sleep(0.05)
                assert writer.backlog == 4
        assert await asyncio.gather(*submitted) == [True] * 5
        assert writer.batches == 2
    finally:
        await writer.stop()


def wal_size(database_path: Path) -> int:
    return Path(f"{database_path}-wal").stat().st_size


async def test_the_sqlite_wal_stays_bounded_under_sustained_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_database: OpenDatabase
) -> None:
    """With a writer always busy, passive checkpoints alone never let the WAL start over;
    past its limit the writer checkpoints between batches and the file shrinks back."""
    path = tmp_path / "wal.db"
    database = open_database(f"sqlite+aiosqlite:///{path}")
    await upgrade_to_head(database.engine)
    store = open_store(database)
    assert isinstance(store, SqliteInboxStore)
    monkeypatch.setattr(store, "checkpoint_rows", 10**9)  # no checkpoints beside it
    monkeypatch.setattr(store, "wal_limit_bytes", 128 * 1024)
    largest = 0
    try:
        for start in range(0, 4000, 40):
            batch = [record(n) for n in range(start, start + 40)]
            await store.store(batch, duplicates=0, now=NOW)
            largest = max(largest, wal_size(path))
    finally:
        await store.close()
    assert store.checkpoints >= 2
    # 4,000 rows wrote several MB of WAL frames; the file never kept them all.
    assert largest < 2 * 1024 * 1024, largest


@pytest.mark.postgres
async def test_a_postgres_connection_killed_while_idle_costs_no_batch(
    postgres_database: Database, postgres_url: str
) -> None:
    store = open_store(postgres_database)
    assert isinstance(store, PostgresInboxStore)
    try:
        assert await store.store([record(1)], duplicates=0, now=NOW) == {"msg_1"}
        assert await terminate_other_backends(postgres_url) >= 1
        assert await store.store([record(2)], duplicates=0, now=NOW) == {"msg_2"}
    finally:
        await store.close()


@STORES
async def test_tallies_add_to_their_minute_and_outcome(
    database: Database, make_store: Callable[[Database], InboxStore]
) -> None:
    later = NOW + timedelta(minutes=1)
    store = make_store(database)
    try:
        await store.add_tallies({("invalid_signature", NOW): 3, ("malformed_request", NOW): 1})
        await store.add_tallies({("invalid_signature", NOW): 2, ("invalid_signature", later): 4})
    finally:
        await store.close()
    async with database.read() as conn:
        rows = await conn.execute(
            sa.select(webhook_tallies.c.minute, webhook_tallies.c.outcome, webhook_tallies.c.count)
        )
        found = {(row.minute, row.outcome): row.count for row in rows}
    minute = NOW.replace(second=0, microsecond=0)
    assert found == {
        (minute, "invalid_signature"): 5,
        (minute, "malformed_request"): 1,
        (minute + timedelta(minutes=1), "invalid_signature"): 4,
    }
