"""The event hub against real databases: it hands out events in id order, waits at a hole
in the ids while a PostgreSQL transaction may still fill it, and drops a subscriber that
falls a buffer behind, freeing what it held."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from service.db import repository as repo
from service.db.engine import Database
from service.db.event_feed import FeedEvent, FeedFilter, events_after
from service.db.models import leases
from service.domain import InstanceSpec
from service.errors import DatabaseError
from service.event_hub import EventHub, SubscriberDroppedError, Subscription
from tests.plugins.database import OpenDatabase, postgres_admin_url

NOW = datetime(2026, 3, 1, tzinfo=UTC)


async def add_instances(database: Database, count: int, **labels: str) -> list[str]:
    ids = []
    async with database.transaction() as conn:
        for number in range(count):
            spec = InstanceSpec(name=f"i-{number}", product_name="RTX 4090 24GB", labels=labels)
            ids.append((await repo.insert_instance(conn, spec, now=NOW)).instance.id)
    return ids


class Collector:
    """Reads a hub stream in a task, keeping everything it yields."""

    def __init__(self, stream: AsyncIterator[FeedEvent]) -> None:
        self.items: list[FeedEvent] = []
        self.error: BaseException | None = None
        self._grew = asyncio.Event()
        self._task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterator[FeedEvent]) -> None:
        try:
            async for item in stream:
                self.items.append(item)
                self._grew.set()
        except SubscriberDroppedError as exc:
            self.error = exc

    async def wait_for(self, count: int) -> list[str]:
        async with asyncio.timeout(10):
            while len(self.items) < count:
                self._grew.clear()
                await self._grew.wait()
        return [item.instance_id for item in self.items]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_streams_start_at_the_present_and_see_what_follows(database: Database) -> None:
    await add_instances(database, 2)
    hub = EventHub(database, poll_interval=0.02)
    collector = Collector(await hub.open_stream(FeedFilter(), after=None, capacity=100))
    try:
        await asyncio.sleep(0.1)
        later = await add_instances(database, 3)
        assert await collector.wait_for(3) == later
        await asyncio.sleep(0.1)
        assert len(collector.items) == 3
    finally:
        await collector.close()
        await hub.close()
    assert not hub.running, "the hub stops polling when its last stream ends"


async def test_from_now_on_is_fixed_when_the_stream_is_opened(database: Database) -> None:
    """An event committed between opening a stream and first reading it (while the
    caller's client receives its answer) is after the stream's start: it is sent."""
    await add_instances(database, 2)
    hub = EventHub(database, poll_interval=0.02)
    stream = await hub.open_stream(FeedFilter(), after=None, capacity=100)
    in_between = await add_instances(database, 1)
    collector = Collector(stream)
    try:
        assert await collector.wait_for(1) == in_between
        later = await add_instances(database, 1)
        assert await collector.wait_for(2) == in_between + later
    finally:
        await collector.close()
        await hub.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def unreachable_database(
    request: pytest.FixtureRequest, tmp_path: Path, open_database: OpenDatabase
) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/no-such-directory/service.db"
    else:  # a port nothing listens on: every connection is refused
        url = make_url(postgres_admin_url()).set(port=1).render_as_string(hide_password=False)
    before = set(threading.enumerate())
    yield open_database(url)
    # aiosqlite stops a connection that failed to open on its worker thread, which then
    # hands its answer to the event loop: wait for it, or it may find the loop closed.
    for thread in set(threading.enumerate()) - before:
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)


@pytest.mark.parametrize("after", [None, 0])
async def test_opening_a_stream_without_the_database_is_a_database_error(
    unreachable_database: Database, after: int | None
) -> None:
    """Opening reads the database whether or not the client resumes, so its caller can
    still answer 503 rather than a stream that ends at once."""
    hub = EventHub(unreachable_database, poll_interval=0.02)
    with pytest.raises(DatabaseError):
        await hub.open_stream(FeedFilter(), after=after, capacity=10)
    assert not hub.running
    await hub.close()


async def test_the_last_stream_leaving_stops_the_poller(database: Database) -> None:
    hub = EventHub(database, poll_interval=0.02)
    collector = Collector(await hub.open_stream(FeedFilter(), after=None, capacity=10))
    await asyncio.sleep(0.1)
    assert hub.running and hub.subscriber_count == 1
    await collector.close()
    assert not hub.running and hub.subscriber_count == 0
    await hub.close()


@pytest.mark.postgres
async def test_a_hole_is_waited_for_until_its_transaction_ends(
    postgres_database: Database,
) -> None:
    """Two writers: the first draws the smaller id but commits last. The hub must not
    pass the hole while that transaction runs, or the event would be lost to streams."""
    database = postgres_database
    await add_instances(database, 1)
    hub = EventHub(database, poll_interval=3600)  # polled by hand below
    await hub._ensure_running()
    start = hub.position
    async with database.transaction() as slow:
        spec = InstanceSpec(name="slow", product_name="RTX 4090 24GB")
        slow_id = (await repo.insert_instance(slow, spec, now=NOW)).instance.id
        (fast_id,) = await add_instances(database, 1)
        for _ in range(3):
            await hub.poll_once()
            assert hub.position == start, "passed a hole whose transaction still runs"
    # Committed now: the hole fills and both come out, in id order.
    subscription = Subscription(start, FeedFilter(), capacity=10)
    hub._subscriptions.add(subscription)
    await hub.poll_once()
    assert [item.instance_id for item in await batch(subscription)] == [slow_id, fast_id]
    await hub.close()


@pytest.mark.postgres
async def test_a_hole_left_by_a_rollback_is_passed_once_nothing_can_fill_it(
    postgres_database: Database,
) -> None:
    """A rolled-back id never fills; a transaction that runs all along but writes no
    event (here: a lease, elsewhere: another database of the cluster) does not hold the
    stream back."""
    database = postgres_database
    hub = EventHub(database, poll_interval=3600)
    await hub._ensure_running()
    async with database.transaction() as unrelated:
        await unrelated.execute(
            leases.insert().values(owner="o", name="n", acquired_at=NOW, expires_at=NOW)
        )
        with pytest.raises(RuntimeError):
            async with database.transaction() as conn:
                spec = InstanceSpec(name="rolled-back", product_name="RTX 4090 24GB")
                await repo.insert_instance(conn, spec, now=NOW)
                raise RuntimeError("roll back")
        (kept,) = await add_instances(database, 1)
        subscription = Subscription(hub.position, FeedFilter(), capacity=10)
        hub._subscriptions.add(subscription)
        await hub.poll_once()  # sees the hole
        await hub.poll_once()  # nobody who could fill it is left
        assert [item.instance_id for item in await batch(subscription)] == [kept]
    await hub.close()


async def batch(subscription: Subscription) -> list[FeedEvent]:
    async with asyncio.timeout(5):
        return await subscription.next_batch()


async def test_a_subscriber_a_buffer_behind_is_dropped_and_its_buffer_freed(
    database: Database,
) -> None:
    hub = EventHub(database, poll_interval=3600)
    await hub._ensure_running()
    slow = Subscription(hub.position, FeedFilter(), capacity=10)
    keeping_up = Subscription(hub.position, FeedFilter(), capacity=1000)
    hub._subscriptions.update({slow, keeping_up})
    await add_instances(database, 25)
    await hub.poll_once()
    assert slow.dropped and len(slow) == 0
    assert slow not in hub._subscriptions
    with pytest.raises(SubscriberDroppedError):
        await slow.next_batch()
    assert len(await batch(keeping_up)) == 25
    # Never more than its capacity was held, however many events came.
    await add_instances(database, 200)
    small = Subscription(hub.position, FeedFilter(), capacity=10)
    sizes = []
    for item in await _all_after(database, hub.position - 200):
        small.offer(item)
        sizes.append(len(small))
    assert max(sizes) <= 10 and small.dropped
    await hub.close()


async def _all_after(database: Database, after: int) -> list[FeedEvent]:
    async with database.read() as conn:
        return await events_after(conn, after, limit=1000)


async def test_filters_apply_to_live_events(database: Database) -> None:
    hub = EventHub(database, poll_interval=0.02)
    red = Collector(
        await hub.open_stream(FeedFilter(labels=(("team", "red"),)), after=None, capacity=50)
    )
    try:
        await asyncio.sleep(0.1)
        await add_instances(database, 2, team="blue")
        wanted = await add_instances(database, 2, team="red")
        assert await red.wait_for(2) == wanted
        await asyncio.sleep(0.1)
        assert len(red.items) == 2
    finally:
        await red.close()
        await hub.close()
