"""One Novita rate limit for every process on a PostgreSQL database.

Every process runs its own `RateLimiter` (service/novita/limiter.py): it orders its own
callers by priority and keeps its own starts within the limit. With several processes on
one database (one Novita account), that alone would let each spend the whole limit. So
before a start, the limiter asks this window too: a row per Novita request started by any
process in the last `window` seconds, in `novita_call_starts`.

`take` is one short transaction: a transaction-level advisory lock makes the processes
take their turns (at most RATE_LIMIT_PER_MINUTE a minute, so the lock is never busy for
long), rows that have left the window are deleted, and a start is recorded only if it
leaves the free places the caller's class must leave to the classes above it (the
limiter's headroom, now over every process's starts). Otherwise it answers how long until
enough starts leave the window. Times are the database server's (`clock_timestamp()`, read
once the lock is held), so the processes' own clocks need not agree.

SQLite is one process's database: the limiter's own window is the whole limit there.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from service.db.engine import Database
from service.db.models import novita_call_starts

# The advisory lock's key: any constant no other code of ours uses (it reads "NovitaRL").
_LOCK_KEY = 0x4E6F76697461524C

_NOW = sa.text("SELECT clock_timestamp()")
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_LOCK_KEY)


class SharedCallWindow:
    """The starts of every process on one PostgreSQL database (`SharedStarts` of the limiter)."""

    def __init__(self, database: Database) -> None:
        if database.is_sqlite:
            raise ValueError("the shared call window needs PostgreSQL")
        self._database = database

    async def take(self, *, need: int, limit: int, window: float) -> float | None:
        """Record one start if at least `need` of the `limit` places in the last `window`
        seconds are free (None); otherwise the seconds until enough of them are."""
        async with self._database.transaction() as conn:
            await conn.execute(_LOCK)
            now = (await conn.execute(_NOW)).scalar_one()
            since = now - timedelta(seconds=window)
            await conn.execute(
                novita_call_starts.delete().where(novita_call_starts.c.started_at <= since)
            )
            started = (
                await conn.execute(sa.select(sa.func.count()).select_from(novita_call_starts))
            ).scalar_one()
            over = started + need - limit
            if over <= 0:
                await conn.execute(novita_call_starts.insert().values(started_at=now))
                return None
            # The start whose leaving frees the last place needed.
            freeing = (
                await conn.execute(
                    sa.select(novita_call_starts.c.started_at)
                    .order_by(novita_call_starts.c.started_at)
                    .offset(over - 1)
                    .limit(1)
                )
            ).scalar_one_or_none()
        if freeing is None:  # fewer starts than places wanted: never, as need <= limit
            return window
        return max(0.0, float((freeing - since).total_seconds()))

