"""`Database.run_sync_transaction` (a SQLite file's write transaction run start to end on a
plain connection of its own thread): what it wrote is committed, or nothing is when it
raises; read back with SQLAlchemy's types; its one connection is kept for the next and
closed with the database; and it refuses a database that is not a SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service.db.engine import Database
from service.db.models import webhook_tallies

MINUTE = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)


def add_tally(conn: sa.Connection, outcome: str) -> int:
    conn.execute(webhook_tallies.insert().values(minute=MINUTE, outcome=outcome, count=3))
    return int(conn.scalar(sa.select(sa.func.count()).select_from(webhook_tallies)) or 0)


async def stored(database: Database) -> list[tuple[datetime, str, int]]:
    async with database.read() as conn:
        rows = await conn.execute(sa.select(webhook_tallies).order_by(webhook_tallies.c.outcome))
        return [(row.minute, row.outcome, row.count) for row in rows]


async def test_work_is_committed_or_rolled_back_as_a_whole(database: Database) -> None:
    if database.sqlite_file is None:
        with pytest.raises(RuntimeError, match="SQLite file"):
            await database.run_sync_transaction(lambda conn: add_tally(conn, "kept"))
        assert await stored(database) == []
        return

    assert await database.run_sync_transaction(lambda conn: add_tally(conn, "kept")) == 1
    assert await stored(database) == [(MINUTE, "kept", 3)]

    def fails(conn: sa.Connection) -> int:
        add_tally(conn, "dropped")
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        await database.run_sync_transaction(fails)
    assert await stored(database) == [(MINUTE, "kept", 3)]
    # One plain connection, kept for the next transaction (closed with the database: the
    # fixture checks that).
    (kept,) = database.open_sqlite_connections
    assert await database.run_sync_transaction(lambda conn: add_tally(conn, "again")) == 2
    assert database.open_sqlite_connections == {kept}
