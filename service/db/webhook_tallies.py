"""Counters of webhook requests the inbox does not keep a row for (`webhook_tallies`).

Duplicates are counted by the group-commit writer in its batch transaction; rejections
(bad signature, malformed, too large) by the endpoint, one upsert per rejected request.
The reliability report reads them back per outcome.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import webhook_tallies

DUPLICATE = "duplicate"


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


async def increment(conn: AsyncConnection, outcome: str, *, now: datetime, by: int = 1) -> None:
    """Add `by` to this minute's count of `outcome` (one statement, no read first)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(webhook_tallies).values(minute=minute_of(now), outcome=outcome, count=by)
    statement = statement.on_conflict_do_update(
        index_elements=["minute", "outcome"],
        set_={"count": webhook_tallies.c.count + statement.excluded.count},
    )
    await conn.execute(statement)
