"""The unit of work and where database work runs: commits and rollbacks are finished
even when the task is cancelled, and SQLite reads stay off the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from service.db.engine import Database
from service.db.models import instances
from tests.plugins.database import OpenDatabase, assert_no_leaked_connections
from tests.support.instance_rows import create


async def name_of(database: Database, instance_id: str) -> str:
    async with database.read() as conn:
        name = await conn.scalar(sa.select(instances.c.name).where(instances.c.id == instance_id))
    return str(name)


def cancel_on(database: Database, event_name: str, task: list[asyncio.Task[Any]]) -> None:
    """Cancel `task[0]` the moment the engine starts a commit or rollback."""

    def cancel(_connection: Any) -> None:
        if task and not task[0].done():
            task[0].cancel()

    event.listen(database.engine.sync_engine, event_name, cancel)


async def test_a_commit_under_way_is_finished_when_the_task_is_cancelled(
    database: Database,
) -> None:
    instance_id = await create(database, name="before")
    writer: list[asyncio.Task[Any]] = []

    async def rename() -> None:
        async with database.transaction() as conn:
            await conn.execute(
                sa.update(instances).where(instances.c.id == instance_id).values(name="after")
            )

    cancel_on(database, "commit", writer)
    writer.append(asyncio.ensure_future(rename()))
    with pytest.raises(asyncio.CancelledError):
        await writer[0]

    assert await name_of(database, instance_id) == "after"
    assert_no_leaked_connections(database)
    await create(database, name="next")  # the connection went back to the pool in order


async def test_a_rollback_under_way_is_finished_when_the_task_is_cancelled(
    database: Database,
) -> None:
    instance_id = await create(database, name="before")
    writer: list[asyncio.Task[Any]] = []

    async def rename_then_fail() -> None:
        async with database.transaction() as conn:
            await conn.execute(
                sa.update(instances).where(instances.c.id == instance_id).values(name="after")
            )
            raise LookupError("changed my mind")

    cancel_on(database, "rollback", writer)
    writer.append(asyncio.ensure_future(rename_then_fail()))
    with pytest.raises(asyncio.CancelledError):
        await writer[0]

    assert await name_of(database, instance_id) == "before"
    assert_no_leaked_connections(database)
    await create(database, name="next")


async def test_sqlite_reads_run_off_the_event_loop(
    tmp_path: Path, open_database: OpenDatabase
) -> None:
    """`Database.read()` (what /health, the relister and the idle scan use) runs SQLite
    statements on aiosqlite's thread, never on the event loop's."""
    database = open_database(f"sqlite+aiosqlite:///{tmp_path}/reads.db")
    async with database.read() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.create_function("thread_id", 0, threading.get_ident)
        ran_on = await conn.scalar(sa.text("SELECT thread_id()"))
    assert ran_on != threading.get_ident()


@pytest.mark.leaks_connections
async def test_closing_with_a_pooled_connection_still_out_notes_and_logs_the_leak(
    open_database: OpenDatabase, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = open_database(database_url)
    kept = await database.engine.connect()
    await database.close()
    await kept.invalidate()  # closes the driver's connection, the pool being gone
    await kept.close()
    assert database.left_open == ["1 pooled connection(s) checked out"]
    warned = [r.msg for r in caplog.records if r.levelname == "WARNING"]
    assert [m["event"] for m in warned if isinstance(m, dict)] == [
        "database.closed_with_connections_open"
    ]


@pytest.mark.leaks_connections
async def test_closing_with_a_plain_sqlite_connection_open_notes_the_leak(
    open_database: OpenDatabase, tmp_path: Path
) -> None:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path}/leak.db")
    kept = database.open_sqlite_connection()
    await database.close()
    kept.close()
    assert database.left_open == ["1 plain SQLite connection(s)"]


async def test_closing_twice_notes_nothing_more(
    open_database: OpenDatabase, database_url: str
) -> None:
    database = open_database(database_url)
    async with database.read() as conn:
        await conn.execute(sa.text("SELECT 1"))
    await database.close()
    await database.close()
    assert database.left_open == []
