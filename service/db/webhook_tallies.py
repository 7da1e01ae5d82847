"""Counters of webhook requests the inbox does not keep a row for (`webhook_tallies`).

Duplicates are counted by the group-commit writer in its batch transaction; rejections
(bad signature, malformed, too large) by the endpoint, one upsert per rejected request.
The reliability report reads them back per outcome.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
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


async def increment(conn: AsyncConnection, outcome: str, *, now: datetime, by: int = 1) -> None:
    """Add `by` to this minute's count of `outcome`."""
    await conn.execute(
        increment_statement(conn.dialect.name),
        {"minute": minute_of(now), "outcome": outcome, "by": by},
    )
