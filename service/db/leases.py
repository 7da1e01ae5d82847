"""Named leader leases: one process at a time runs a singleton loop (e.g. the full relist).

A lease is a row `(name, owner, acquired_at, expires_at)`. `try_acquire` is one atomic
statement on both engines: insert the row if there is none; else take it over if it has
expired, or renew it if it is already ours; else leave it alone. `INSERT ... ON CONFLICT
DO UPDATE ... WHERE` decides that under the row's lock (PostgreSQL) or the database write
lock (SQLite), so two processes can never both believe they hold a lease.

A holder renews by acquiring again before `expires_at`; a holder that dies simply stops
renewing, and the lease passes to whoever asks after it expires.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import leases


async def try_acquire(
    conn: AsyncConnection, name: str, owner: str, now: datetime, ttl: float
) -> bool:
    """Take, take over (expired) or renew (ours) the lease `name`; True if `owner` holds it."""
    insert = (
        postgresql.insert(leases) if conn.dialect.name == "postgresql" else sqlite.insert(leases)
    )
    statement = insert.values(
        name=name, owner=owner, acquired_at=now, expires_at=now + timedelta(seconds=ttl)
    )
    renewing = leases.c.owner == statement.excluded.owner
    upsert = statement.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={
            "owner": statement.excluded.owner,
            # A renewal keeps the original acquisition time: it says how long we have led.
            "acquired_at": sa.case(
                (renewing, leases.c.acquired_at), else_=statement.excluded.acquired_at
            ),
            "expires_at": statement.excluded.expires_at,
        },
        where=sa.or_(leases.c.expires_at <= now, renewing),
    ).returning(leases.c.owner)
    row = (await conn.execute(upsert)).first()
    return row is not None and row.owner == owner


async def release(conn: AsyncConnection, name: str, owner: str) -> bool:
    """Give the lease up now (if it is ours), so another process need not wait for expiry."""
    result = await conn.execute(
        leases.delete().where(leases.c.name == name, leases.c.owner == owner)
    )
    return result.rowcount == 1


async def holder(conn: AsyncConnection, name: str, now: datetime) -> str | None:
    """Who holds the lease right now, if anyone (an expired lease is held by nobody)."""
    row = (
        await conn.execute(
            sa.select(leases.c.owner).where(leases.c.name == name, leases.c.expires_at > now)
        )
    ).first()
    return row.owner if row is not None else None
