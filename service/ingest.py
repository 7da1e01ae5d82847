"""Group commit for inbound webhooks: many concurrent requests, one transaction per batch.

Each request hands its event to `InboxWriter.submit()` and waits; one writer task takes
everything queued (up to `max_batch`), stores it in a single transaction, and then
answers every waiting request. A request is acknowledged only after its batch committed,
so throughput does not collapse to one fsync per request, and nothing acknowledged can be
lost. Where the store allows it (PostgreSQL), a few batches are in flight at once: the next
batch gathers and starts while the previous one waits for its commit, but only once it
has `min_overlap` events (or the batch before it is done): a slot that grabbed the first
event to arrive would commit one event per fsync and leave the rest to queue. The queue is
bounded: when it is full, `submit` fails at once (the endpoint answers 503 with
Retry-After) instead of letting memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from service.clock import Clock
from service.db.engine import Database
from service.db.inbox import InboxRecord
from service.db.inbox_store import InboxStore, open_store
from service.errors import ServiceError

log = structlog.get_logger(__name__)


class IngestBusyError(ServiceError):
    """Too many webhooks are waiting to be stored; retry shortly."""

    code = "INGEST_BUSY"
    retry_after = 1.0


class IngestUnavailableError(ServiceError):
    """The webhook could not be stored; it was not acknowledged."""

    code = "INGEST_UNAVAILABLE"
    retry_after = 5.0


@dataclass(slots=True)
class _Pending:
    record: InboxRecord
    done: asyncio.Future[bool]


class InboxWriter:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        max_queue: int = 10_000,
        max_batch: int = 1_000,
        min_overlap: int = 16,
        store: InboxStore | None = None,
    ) -> None:
        self._store = store if store is not None else open_store(database)
        self._clock = clock
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=max_queue)
        self._max_batch = max_batch
        self._min_overlap = min_overlap
        # Set while the writer waits for a second batch to fill (see _run).
        self._gathering: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # Called after each committed batch (e.g. to wake the applier).
        self.on_stored: list[Callable[[], None]] = []
        self.batches = 0
        self.submitted = 0
        self.stored = 0
        self.duplicates = 0

    @property
    def max_in_flight(self) -> int:
        """How many batches may be storing at once."""
        return self._store.max_in_flight

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def stop(self) -> None:
        """Store everything already queued, then end the writer task."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        await self._store.close()

    async def submit(self, record: InboxRecord) -> bool:
        """Store the event; True if it was new, False if its webhook id was seen before."""
        if self._task is None or self._task.done():
            raise IngestUnavailableError("the webhook writer is not running")
        pending = _Pending(record, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(pending)
            self.submitted += 1
            if self._gathering is not None and self._queue.qsize() >= self._min_overlap:
                self._gathering.set()
        except asyncio.QueueFull:
            raise IngestBusyError(
                "too many webhooks are waiting to be stored; retry shortly"
            ) from None
        # Not shielded: a request that gives up cancels only its own future, which the
        # writer skips when it answers the batch; the event is stored all the same.
        return await pending.done

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self._store.max_in_flight)
        writing: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            writing.discard(task)
            slots.release()
            if self._gathering is not None:
                self._gathering.set()

        stopping = False
        try:
            while not stopping:
                # A free slot first: while every slot is busy, events wait in the (bounded)
                # queue, and all of them join the next batch.
                await slots.acquire()
                if writing and self._queue.qsize() < self._min_overlap:
                    # A batch is storing already: start another beside it only once enough
                    # events wait, or when one finishes, whichever comes first.
                    self._gathering = asyncio.Event()
                    try:
                        await self._gathering.wait()
                    finally:
                        self._gathering = None
                first = await self._queue.get()
                if first is None:
                    slots.release()
                    break
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                task = asyncio.create_task(self._write(batch), name="inbox-batch")
                writing.add(task)
                task.add_done_callback(finished)
        finally:
            # Batches already handed to the store finish (stop) or are failed (cancel).
            await asyncio.gather(*writing, return_exceptions=True)

    async def _write(self, batch: list[_Pending]) -> None:
        # The first occurrence of an id in the batch may be new; any later one is a duplicate.
        # Duplicates leave no row of their own: the store counts them (for the reliability
        # report) in the same commit.
        first_seen: dict[str, _Pending] = {}
        for item in batch:
            first_seen.setdefault(item.record.webhook_id, item)
        try:
            inserted = await self._store.store(
                [item.record for item in first_seen.values()],
                duplicates=len(batch) - len(first_seen),
                now=self._clock.now(),
            )
        except asyncio.CancelledError:
            self._fail(batch, IngestUnavailableError("the service is shutting down"))
            raise
        except Exception:
            log.exception("ingest.batch_failed", size=len(batch))
            self._fail(batch, IngestUnavailableError())
            return
        self.batches += 1
        for callback in self.on_stored:
            callback()
        for item in batch:
            is_new = first_seen[item.record.webhook_id] is item and (
                item.record.webhook_id in inserted
            )
            self.stored += is_new
            self.duplicates += not is_new
            if not item.done.done():
                item.done.set_result(is_new)

    @staticmethod
    def _fail(batch: list[_Pending], error: Exception) -> None:
        for item in batch:
            if not item.done.done():
                item.done.set_exception(error)
                # Whoever gave up waiting (a cancelled request) must not leave it unread.
                with contextlib.suppress(Exception):
                    item.done.exception()
