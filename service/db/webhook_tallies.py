"""Counters of webhook requests the inbox does not keep a row for (`webhook_tallies`).

Duplicates are counted by the group-commit writer in its batch transaction; rejections
(bad signature, malformed, too large) by the endpoint, one upsert per rejected request.
The reliability report reads them back per outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from service.db.models import webhook_tallies

DUPLICATE = "duplicate"


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def increment_statement(dialect_name: str) -> Insert:
    """The upsert adding `:by` to the `:minute` row of `:outcome` (one statement, no read
    first); the SQLite inbox store runs it compiled, on its own connection."""
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    statement = insert(webhook_tallies).values(
        minute=sa.bindparam("minute"), outcome=sa.bindparam("outcome"), count=sa.bindparam("by")
    )
    return statement.on_conflict_do_update(
        index_elements=["minute", "outcome"],
        set_={"count": webhook_tallies.c.count + statement.excluded.count},
    )


class DriverIncrement:
    """`increment_statement` compiled for one dialect, with its parameters as the driver
    takes them, for a store that runs its SQL on a connection of its own. The minute goes
    through its column type's bind processor, so the row reads back as SQLAlchemy's."""

    def __init__(self, dialect: Dialect) -> None:
        self.sql = str(increment_statement(dialect.name).compile(dialect=dialect))
        self._process_minute = webhook_tallies.c.minute.type.bind_processor(dialect)

    def params(self, outcome: str, *, now: datetime, by: int) -> tuple[Any, str, int]:
        """The driver's parameters, in the compiled statement's order (minute, outcome, by)."""
        minute = minute_of(now)
        stamp = self._process_minute(minute) if self._process_minute is not None else minute
        return (stamp, outcome, by)


async def increment(conn: AsyncConnection, outcome: str, *, now: datetime, by: int = 1) -> None:
    """Add `by` to this minute's count of `outcome`."""
    await conn.execute(
        increment_statement(conn.dialect.name),
        {"minute": minute_of(now), "outcome": outcome, "by": by},
    )
