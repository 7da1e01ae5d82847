"""Leader leases on SQLite and PostgreSQL: one holder at a time, renewal, takeover after
expiry, release, and no double grant when many processes ask at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from service.db import leases
from service.db.engine import Database
from tests.plugins.database import OpenDatabase

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def acquire(database: Database, owner: str, at: datetime, ttl: float = 60) -> bool:
    async with database.transaction() as conn:
        return await leases.try_acquire(conn, "relist", owner, at, ttl)


async def holder(database: Database, at: datetime) -> str | None:
    async with database.read() as conn:
        return await leases.holder(conn, "relist", at)


async def test_one_holder_until_expiry_then_anyone_may_take_over(database: Database) -> None:
    assert await acquire(database, "a", T0)
    assert not await acquire(database, "b", T0 + timedelta(seconds=30))
    assert await holder(database, T0 + timedelta(seconds=30)) == "a"
    assert not await acquire(database, "b", T0 + timedelta(seconds=59))
    assert await acquire(database, "b", T0 + timedelta(seconds=60)), "expired: taken over"
    assert await holder(database, T0 + timedelta(seconds=61)) == "b"
    assert not await acquire(database, "a", T0 + timedelta(seconds=61))


async def test_the_holder_renews_and_keeps_its_acquisition_time(database: Database) -> None:
    assert await acquire(database, "a", T0)
    assert await acquire(database, "a", T0 + timedelta(seconds=50))
    assert not await acquire(database, "b", T0 + timedelta(seconds=100)), "renewed to 110 s"
    assert await holder(database, T0 + timedelta(seconds=109)) == "a"
    async with database.read() as conn:
        from service.db.models import leases as table

        row = (await conn.execute(table.select())).one()
    assert row.acquired_at == T0


async def test_release_hands_the_lease_over_at_once(database: Database) -> None:
    assert await acquire(database, "a", T0)
    async with database.transaction() as conn:
        assert not await leases.release(conn, "relist", "b"), "only the holder releases"
        assert await leases.release(conn, "relist", "a")
    assert await holder(database, T0) is None
    assert await acquire(database, "b", T0)


async def test_many_concurrent_claimants_get_exactly_one_grant(
    database: Database, open_database: OpenDatabase
) -> None:
    url = database.engine.url.render_as_string(hide_password=False)
    others = [open_database(url) for _ in range(6)]
    for round_number in range(3):
        at = T0 + timedelta(minutes=10 * round_number)  # the previous grant has expired
        granted = await asyncio.gather(*(acquire(db, f"p{n}", at) for n, db in enumerate(others)))
        assert sum(granted) == 1, granted
