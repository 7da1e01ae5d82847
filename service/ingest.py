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

One bad event never fails the others: a batch the database refuses (not an outage: a row
it cannot store, say a number PostgreSQL's numeric type cannot hold) is split in halves and
each half stored on its own, down to the one event that cannot be stored, which alone is
refused (400, naming the database's reason; the sender should not retry it). An outage
fails the batch as a whole (503): nothing was stored, and the senders retry.

Rejected requests (bad signature, malformed, too large) are counted here, in memory, and
written once a second in one transaction (and when the writer stops), so a flood of
unauthenticated requests costs no write per request; the reliability report sees them up
to a second late.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from sqlalchemy import exc as sa_exc

from service.clock import Clock
from service.db import webhook_tallies
from service.db.engine import Database
from service.db.inbox import InboxRecord
from service.db.inbox_store import InboxStore, open_store
from service.db.outage import causes, describe, is_database_outage
from service.errors import IngestBusyError, IngestUnavailableError, UnstorableEventError

log = structlog.get_logger(__name__)


# What a database raises for a row it will never store (PostgreSQL's class 22 "data
# exception" and 23 "integrity constraint violation", and their SQLite and SQLAlchemy
# equivalents), as opposed to an outage or a bug.
_UNSTORABLE = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    sa_exc.DataError,
    sa_exc.IntegrityError,
)


def _is_unstorable(error: BaseException) -> bool:
    if is_database_outage(error):
        return False
    return any(isinstance(link, _UNSTORABLE) for link in causes(error))


def _reason(error: BaseException) -> str:
    """The database's own words for a refused row (the driver's message, first line)."""
    for link in causes(error):
        if isinstance(link, asyncpg.PostgresError | sqlite3.Error):
            return describe(link).partition(": ")[2] or describe(link)
    return describe(error).partition(": ")[2] or describe(error)


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
        tally_interval: float = 1.0,
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
        # Rejections counted since the last write, by (outcome, minute).
        self._rejections: dict[tuple[str, datetime], int] = {}
        self._tally_interval = tally_interval
        self._tally_task: asyncio.Task[None] | None = None
        self._tallies_failing = False
        self._stopped = False
        # Called after each committed batch (e.g. to wake the applier).
        self.on_stored: list[Callable[[], None]] = []
        self.batches = 0
        self.submitted = 0
        self.stored = 0
        self.duplicates = 0
        self.refused = 0

    @property
    def max_in_flight(self) -> int:
        """How many batches may be storing at once."""
        return self._store.max_in_flight

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")
        self._tally_task = asyncio.create_task(self._write_tallies(), name="inbox-tallies")

    async def stop(self) -> None:
        """Store everything already queued, then end the writer task (once)."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        if self._tally_task is not None:
            self._tally_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tally_task
            self._tally_task = None
        await self.flush_tallies()
        await self._store.close()

    def count_rejection(self, reason: str, now: datetime) -> None:
        """Count one rejected request; written with the next flush (no I/O here)."""
        key = (reason, webhook_tallies.minute_of(now))
        self._rejections[key] = self._rejections.get(key, 0) + 1

    @property
    def pending_rejections(self) -> int:
        return sum(self._rejections.values())

    async def flush_tallies(self) -> None:
        """Write the rejections counted so far in one transaction; kept for the next
        flush if the database cannot take them now."""
        if not self._rejections:
            return
        counts, self._rejections = self._rejections, {}
        try:
            await self._store.add_tallies(counts)
        except Exception as error:
            for key, count in counts.items():
                self._rejections[key] = self._rejections.get(key, 0) + count
            if not self._tallies_failing:
                self._tallies_failing = True
                log.warning("ingest.tallies_not_written", error=describe(error))
            return
        if self._tallies_failing:
            self._tallies_failing = False
            log.info("ingest.tallies_written_again")

    async def _write_tallies(self) -> None:
        while True:
            await asyncio.sleep(self._tally_interval)
            await self.flush_tallies()

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
        records = [item.record for item in first_seen.values()]
        duplicates = len(batch) - len(first_seen)
        now = self._clock.now()
        refused: dict[str, str] = {}
        try:
            try:
                inserted = await self._store.store(records, duplicates=duplicates, now=now)
            except Exception as error:
                if is_database_outage(error):
                    raise
                inserted = await self._isolate(records, error, now, refused)
                # The duplicates were not counted with a half: count them now (those of a
                # refused event are refused with it).
                duplicates = sum(
                    first_seen[item.record.webhook_id] is not item
                    and item.record.webhook_id not in refused
                    for item in batch
                )
                if duplicates:
                    await self._store.add_tallies({(webhook_tallies.DUPLICATE, now): duplicates})
        except asyncio.CancelledError:
            self._fail(batch, IngestUnavailableError("the service is shutting down"))
            raise
        except Exception as error:
            if is_database_outage(error):
                log.warning("ingest.database_unavailable", size=len(batch), error=describe(error))
            else:
                log.exception("ingest.batch_failed", size=len(batch))
            self._fail(batch, IngestUnavailableError())
            return
        self.batches += 1
        for callback in self.on_stored:
            callback()
        for item in batch:
            webhook_id = item.record.webhook_id
            if webhook_id in refused:
                self.refused += 1
                self._fail([item], UnstorableEventError(refused[webhook_id]))
                continue
            is_new = first_seen[webhook_id] is item and webhook_id in inserted
            self.stored += is_new
            self.duplicates += not is_new
            if not item.done.done():
                item.done.set_result(is_new)

    async def _isolate(
        self,
        records: Sequence[InboxRecord],
        error: Exception,
        now: datetime,
        refused: dict[str, str],
    ) -> set[str]:
        """Store `records` (which failed together with `error`) in halves, recursively, so
        only the rows the database will not take are left out, their reasons in `refused`.
        An outage, or an error that is not about a row, fails the whole batch."""
        if len(records) == 1:
            if not _is_unstorable(error):
                raise error
            reason = _reason(error)
            refused[records[0].webhook_id] = f"the event cannot be stored: {reason}"
            log.warning("ingest.event_refused", webhook_id=records[0].webhook_id, error=reason)
            return set()
        half = len(records) // 2
        inserted: set[str] = set()
        for part in (records[:half], records[half:]):
            try:
                inserted |= await self._store.store(part, duplicates=0, now=now)
            except Exception as part_error:
                if is_database_outage(part_error):
                    raise
                inserted |= await self._isolate(part, part_error, now, refused)
        return inserted

    @staticmethod
    def _fail(batch: list[_Pending], error: Exception) -> None:
        for item in batch:
            if not item.done.done():
                item.done.set_exception(error)
                # Whoever gave up waiting (a cancelled request) must not leave it unread.
                with contextlib.suppress(Exception):
                    item.done.exception()
