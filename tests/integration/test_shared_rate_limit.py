"""One Novita rate limit for every process on a PostgreSQL database: two limiters, each
with a `Database` of its own on one real PostgreSQL database (two processes, as far as the
limit can tell), never start more than the limit in any window together; a class's
headroom holds over both; without the database each goes on within its own window.
Real time, on a window of a second or a few (the limit's arithmetic does not depend on
its length)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import sqlalchemy as sa

from service.db.call_window import _LOCK_KEY, SharedCallWindow
from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.db.models import novita_call_starts
from service.novita.limiter import Priority, RateLimiter
from tests.plugins.database import OpenDatabase
from tests.plugins.service import ServiceUnderTest

Limiters = Callable[..., Awaitable[RateLimiter]]


@pytest.fixture
async def limiter_on(
    postgres_url: str, open_database: OpenDatabase
) -> AsyncIterator[Limiters]:
    """`await limiter_on(per_minute, window=...)`: a limiter of a process of its own (a
    `Database` of its own) on the test's PostgreSQL database."""
    made: list[RateLimiter] = []

    async def make(per_minute: int, *, window: float) -> RateLimiter:
        database = open_database(postgres_url)
        if not made:
            await upgrade_to_head(database.engine)
        limiter = RateLimiter(per_minute, shared=SharedCallWindow(database), window=window)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


async def grant_times(limiter: RateLimiter, callers: int, priority: Priority) -> list[float]:
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def caller() -> None:
        await limiter.acquire(priority)
        started.append(loop.time())

    await asyncio.gather(*(caller() for _ in range(callers)))
    return started


async def test_two_processes_never_start_more_than_the_limit_in_any_window(
    limiter_on: Limiters,
) -> None:
    window = 1.0
    first, second = await limiter_on(5, window=window), await limiter_on(5, window=window)
    both = await asyncio.wait_for(
        asyncio.gather(
            grant_times(first, 8, Priority.URGENT), grant_times(second, 8, Priority.URGENT)
        ),
        timeout=30,
    )
    starts = sorted(both[0] + both[1])
    # (Each start is noted here a moment after the database recorded it: 50 ms of slack.)
    busiest = max(sum(1 for t in starts if at <= t < at + window - 0.05) for at in starts)
    assert busiest == 5
    # Each alone would have started 5 at once; together the 16 took three windows more.
    assert starts[-1] - starts[0] >= 3 * window - 0.05
    assert first.granted_by_priority[Priority.URGENT] == 8
    assert second.granted_by_priority[Priority.URGENT] == 8


async def test_a_background_caller_leaves_the_headroom_to_another_process(
    limiter_on: Limiters,
) -> None:
    """Relist pages in one process fill what they may (80 % of the window): the other
    process's background work waits too, its creates and polls still start at once."""
    busy, other = await limiter_on(10, window=30), await limiter_on(10, window=30)
    background = [asyncio.ensure_future(busy.acquire(Priority.BACKGROUND)) for _ in range(10)]
    try:
        async with asyncio.timeout(10):
            while busy.granted_by_priority[Priority.BACKGROUND] < 8:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert busy.granted_by_priority[Priority.BACKGROUND] == 8
        # The other process's own background work finds the shared window as full.
        background.append(asyncio.ensure_future(other.acquire(Priority.BACKGROUND)))
        await asyncio.sleep(0.5)
        assert not background[-1].done()
        await asyncio.wait_for(other.acquire(Priority.URGENT), timeout=5)
        await asyncio.wait_for(other.acquire(Priority.TRANSITIONAL), timeout=5)
        assert busy.granted_by_priority[Priority.BACKGROUND] == 8
        assert other.granted_by_priority[Priority.BACKGROUND] == 0
    finally:
        for waiting in background:
            waiting.cancel()
        await asyncio.gather(*background, return_exceptions=True)


async def test_closing_lets_a_place_being_taken_finish_its_transaction(
    postgres_url: str, open_database: OpenDatabase
) -> None:
    """Stopping the service while the window is busy: the take in progress (here held at
    its lock by another session) ends its transaction before the limiter is closed, so no
    connection is cut halfway and the database then closes with none left open."""
    database = open_database(postgres_url)
    await upgrade_to_head(database.engine)
    limiter = RateLimiter(5, shared=SharedCallWindow(database), window=60)
    holder = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            caller = asyncio.ensure_future(limiter.acquire())
            await asyncio.sleep(0.3)  # the take waits for the lock
            closing = asyncio.ensure_future(limiter.close())
            await asyncio.sleep(0.3)
            assert not closing.done()  # it waits for the take to finish
        await asyncio.wait_for(closing, timeout=10)  # the lock released: the take ends
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
    finally:
        await holder.close()
    await database.close()
    assert database.left_open == []


async def test_without_the_database_a_process_goes_on_within_its_own_window(
    open_database: OpenDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = open_database("postgresql+asyncpg://nobody:secret@127.0.0.1:1/none")
    limiter = RateLimiter(3, shared=SharedCallWindow(nobody), window=60)
    try:
        await asyncio.wait_for(grant_times(limiter, 3, Priority.URGENT), timeout=10)
        fourth = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.3)
        assert not fourth.done()  # its own window is full
        fourth.cancel()
        await asyncio.gather(fourth, return_exceptions=True)
    finally:
        await limiter.close()
    logged = [r.msg for r in caplog.records if r.levelname == "WARNING"]
    warnings = [m["event"] for m in logged if isinstance(m, dict)]
    assert warnings == ["limiter.shared_window_unavailable"]  # once, not per start
    assert "secret" not in caplog.text


async def test_the_service_takes_its_novita_calls_from_the_shared_window_on_postgresql(
    service: ServiceUnderTest,
) -> None:
    database: Database = service.resources.database
    novita = service.resources.novita
    await novita.list_clusters()
    if database.is_sqlite:
        assert novita.limiter.shared is None  # one process: its own window is the limit
        return
    assert isinstance(novita.limiter.shared, SharedCallWindow)
    async with database.read() as conn:
        recorded = (
            await conn.execute(sa.select(sa.func.count()).select_from(novita_call_starts))
        ).scalar_one()
    assert recorded >= 1


@pytest.mark.service_settings(rate_limit_shared=False)
async def test_a_process_keeps_the_whole_limit_when_sharing_is_turned_off(
    service: ServiceUnderTest,
) -> None:
    assert service.resources.novita.limiter.shared is None
