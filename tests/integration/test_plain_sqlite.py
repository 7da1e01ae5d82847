"""A transaction run start to end on a plain SQLite connection of its own thread: what it
wrote is committed, or nothing is when it raises; read back with SQLAlchemy's types; and
its connection is closed after either."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service.db.engine import Database
from service.db.models import webhook_tallies
from service.db.plain_sqlite import PlainSqliteTransactions

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
        pytest.skip("plain transactions are for a SQLite file")
    plain = PlainSqliteTransactions(database)

    assert await plain.run(lambda conn: add_tally(conn, "kept")) == 1
    assert await stored(database) == [(MINUTE, "kept", 3)]

    def fails(conn: sa.Connection) -> int:
        add_tally(conn, "dropped")
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        await plain.run(fails)
    assert await stored(database) == [(MINUTE, "kept", 3)]
    assert not database.open_sqlite_connections
