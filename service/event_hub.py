"""One poller of the event history per process, fanning new events out to its streams.

Events are read from the database (never only from this process's memory), so a stream
served by one process sees the events written by every other one. The hub polls
`instance_events` for ids above its position every `poll_interval` seconds while at least
one stream listens, and hands each event to every subscription whose filter accepts it.

Its position is a promise: every event with an id at or below it has been handed out (or
will never exist). On PostgreSQL a hole in the ids may still fill (a transaction that
drew the smaller id commits later), so the hub stops at a hole until every transaction
that could write events when it first saw the hole (those holding the insert lock on
`instance_events`: long transactions elsewhere do not count) has ended, checked before a
later read, or `gap_max_wait` seconds have passed (a transaction stuck that long is
logged; its event can then only be read from the instance's history). On SQLite a hole
never fills.

A stream's starting point is fixed when it is opened (`open_stream`), before the caller
tells its client the stream has begun: "from now on" is the newest event committed at that
moment, so an event committed once the client holds its answer is always sent. Opening
reads the database, so an outage is a `DatabaseError` while the caller can still answer
it (a 503), rather than a stream that starts and ends at once.

Each subscription buffers at most `capacity` events. A subscriber that falls that far
behind is dropped, its buffer freed at once: its stream ends and the client reconnects
with `Last-Event-ID`, catching up from the database. Memory per client stays bounded
whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError

from service.db.engine import Database
from service.db.event_feed import (
    FeedEvent,
    FeedFilter,
    event_writers,
    events_after,
    last_event_id,
)
from service.errors import DatabaseError

log = structlog.get_logger(__name__)


def _expected(after: int, items: list[FeedEvent]) -> list[tuple[FeedEvent, int]]:
    """Each item with the id that would follow its predecessor (a hole where they differ)."""
    pairs = []
    expected = after + 1
    for item in items:
        pairs.append((item, expected))
        expected = item.id + 1
    return pairs


class SubscriberDroppedError(Exception):
    """The subscriber fell more than its buffer behind; it must reconnect and catch up."""


class Subscription:
    """A stream's bounded buffer of accepted events above `after`."""

    def __init__(self, after: int, where: FeedFilter, capacity: int) -> None:
        self.after = after
        self.where = where
        self.capacity = capacity
        self.dropped = False
        self._buffer: deque[FeedEvent] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._buffer)

    def offer(self, item: FeedEvent) -> bool:
        """Buffer `item` if wanted; False when the buffer is full (then it is dropped)."""
        if item.id <= self.after or not self.where.accepts(item):
            return True
        if len(self._buffer) >= self.capacity:
            self.drop()
            return False
        self._buffer.append(item)
        self._ready.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self._buffer.clear()
        self._ready.set()

    async def next_batch(self) -> list[FeedEvent]:
        """Wait for events; everything buffered, oldest first."""
        while not self._buffer and not self.dropped:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            raise SubscriberDroppedError
        batch = list(self._buffer)
        self._buffer.clear()
        return batch


@dataclass
class _Hole:
    seen_at: float
    writers: frozenset[str]  # who could still fill it, just after it was first seen


class EventHub:
    def __init__(
        self,
        database: Database,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 500,
        start_window: int = 1000,
        gap_max_wait: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.start_window = start_window
        self.gap_max_wait = gap_max_wait
        self._monotonic = monotonic
        self.position = 0
        self._subscriptions: set[Subscription] = set()
        self._holes: dict[int, _Hole] = {}
        self._task: asyncio.Task[None] | None = None
        self._streams = 0  # streams open, catching up or live
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    # --- streams ---------------------------------------------------------------------------

    async def open_stream(
        self, where: FeedFilter, *, after: int | None, capacity: int
    ) -> AsyncIterator[FeedEvent]:
        """The accepted events above `after` (None: from now on), in id order, forever.

        "From now on" is resolved here, to the newest event id committed at this call:
        resolved when the stream is first iterated instead, an event committed in between
        (as the caller's client receives its answer) would count as past and never be
        sent. The database is read either way, so that an outage raises `DatabaseError`
        now, before the caller has started answering.
        """
        newest = await self._newest_event_id()
        return self._stream(where, after=newest if after is None else after, capacity=capacity)

    async def _newest_event_id(self) -> int:
        try:
            async with self.database.read() as conn:
                return await last_event_id(conn)
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError("the database is not available; retry shortly") from exc

    async def _stream(
        self, where: FeedFilter, *, after: int, capacity: int
    ) -> AsyncIterator[FeedEvent]:
        """History up to the hub's position is read from the database, page by page; the
        subscription is registered once the reader has caught up, so the buffer only ever
        holds live events. Raises `SubscriberDroppedError` when the buffer overflows."""
        self._streams += 1
        subscription: Subscription | None = None
        try:
            await self._ensure_running()
            cursor = after
            while cursor < self.position:
                upto = self.position
                async with self.database.read() as conn:
                    page = await events_after(
                        conn, cursor, limit=self.batch_size, upto=upto, where=where
                    )
                for item in page:
                    yield item
                cursor = page[-1].id if len(page) == self.batch_size else upto
            # No await between the check above and this: nothing can fall in between.
            subscription = Subscription(cursor, where, capacity)
            self._subscriptions.add(subscription)
            while True:
                for item in await subscription.next_batch():
                    yield item
        finally:
            self._streams -= 1
            if subscription is not None:
                self._subscriptions.discard(subscription)
                subscription.drop()
            if not self._streams and self._task is not None:
                # Nobody listens: stop polling (its connection back in the pool before
                # this stream is gone). The next stream starts afresh.
                task, self._task = self._task, None
                task.cancel()
                await asyncio.wait({task})

    # --- polling ---------------------------------------------------------------------------

    async def _ensure_running(self) -> None:
        if self._closed:
            raise RuntimeError("the event hub is closed")
        async with self._starting:
            if self.running:
                return
            await self._start_position()
            self._task = asyncio.create_task(self._run(), name="event-hub")

    async def _start_position(self) -> None:
        async with self.database.read() as conn:
            newest = await last_event_id(conn)
        self._holes.clear()
        if self.database.is_sqlite:
            self.position = newest
            return
        # Recent holes may still fill: start a little back and let the first polls (handed
        # to nobody) walk up to the newest event, waiting at holes as always.
        self.position = max(newest - self.start_window, 0)
        while await self.poll_once():
            pass

    async def _run(self) -> None:
        while True:
            try:
                more = await self.poll_once()
            except Exception as exc:  # the database may be down for a while; keep trying
                log.warning("events.poll_failed", error=type(exc).__name__)
                more = False
            if not more:
                await asyncio.sleep(self.poll_interval)

    async def poll_once(self) -> bool:
        """Read what follows the position and hand out what is safe. True when a full
        batch was handed out (more may be waiting right now)."""
        postgres = not self.database.is_sqlite
        writing_before: frozenset[str] | None = None
        async with self.database.read() as conn:
            if postgres and self._holes:
                # Before the read: a writer gone by now has its rows visible to it.
                writing_before = await event_writers(conn)
            items = await events_after(conn, self.position, limit=self.batch_size)
            writing_after = None
            if postgres and any(
                item.id > expected for item, expected in _expected(self.position, items)
            ):
                writing_after = await event_writers(conn)
        expected = self.position + 1
        ready: list[FeedEvent] = []
        for item in items:
            if item.id > expected and not self._hole_closed(
                expected, writing_before, writing_after
            ):
                break
            ready.append(item)
            expected = item.id + 1
        if ready:
            self.position = ready[-1].id
            self._holes = {start: h for start, h in self._holes.items() if start > self.position}
            self._fan_out(ready)
        return len(ready) == self.batch_size

    def _hole_closed(
        self, start: int, before: frozenset[str] | None, after: frozenset[str] | None
    ) -> bool:
        if self.database.is_sqlite:  # one writer at a time: a hole never fills
            return True
        now = self._monotonic()
        hole = self._holes.get(start)
        if hole is None:
            # First seen: wait at least until the next read, whoever is writing now.
            self._holes[start] = _Hole(now, after or frozenset())
            return False
        if before is not None and not hole.writers & before:
            return True  # everyone who could fill it had finished before this read
        if now - hole.seen_at >= self.gap_max_wait:
            log.warning("events.hole_skipped", first_missing_id=start, waited=self.gap_max_wait)
            return True
        return False

    def _fan_out(self, items: list[FeedEvent]) -> None:
        for subscription in list(self._subscriptions):
            for item in items:
                if not subscription.offer(item):
                    log.info(
                        "events.subscriber_dropped",
                        buffered=subscription.capacity,
                        reason="buffer full",
                    )
                    self._subscriptions.discard(subscription)
                    break

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.drop()
        self._subscriptions.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
