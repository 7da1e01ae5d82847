"""Storing one group-commit batch of inbound webhooks, as cheaply as each database allows.

The writer (`service.ingest`) hands a batch of records to `store()` and answers every
request of the batch once it returns. What `store()` does, per database:

- PostgreSQL: one statement per batch, in autocommit on a pooled connection (given to its
  driver connection directly), so it needs one round trip: the rows go in as arrays
  through `unnest`, `ON CONFLICT DO NOTHING RETURNING` says which ids were new, and the
  duplicate count goes into `webhook_tallies` in the same statement. Several batches may
  be in flight at once (`max_in_flight`), so the fsync of one commit overlaps the next
  batch instead of holding every request behind it.
- SQLite (a file): the whole transaction (BEGIN IMMEDIATE, which ids exist, executemany,
  tally, COMMIT) runs as one call on a thread of the store's own, over a plain sqlite3
  connection from `Database.open_sqlite_connection`: one hop off the event loop per batch
  rather than one per statement, and the GIL is released while SQLite works. That
  connection does not checkpoint the WAL after every 1,000 pages as SQLite would (copying
  them and fsyncing the database file would hold every waiting request for tens of
  milliseconds): a second thread runs passive checkpoints beside it, which never block the
  writer. Under sustained load those alone never let the WAL start over (a writer is
  always ahead of them), so once the WAL file passes `wal_limit_bytes` the writer runs one
  itself between batches: by then nearly every page has been copied, so it costs little,
  and the next batch restarts the WAL.
- Anything else (an in-memory SQLite): the same work through SQLAlchemy, in one
  `Database.transaction()`.

The driver-level paths are hand-written for speed; tests hold all of them to the same
results (the ids inserted, duplicates counted, rows read back identically).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol

import structlog
from sqlalchemy.dialects import sqlite as sqlite_dialect

from service.db import inbox, webhook_tallies
from service.db.engine import Database
from service.db.inbox import InboxInsert, InboxRecord
from service.db.outage import is_database_outage

log = structlog.get_logger(__name__)
_SQLITE = sqlite_dialect.dialect()


class InboxStore(Protocol):
    max_in_flight: int

    async def store(
        self, records: Sequence[InboxRecord], *, duplicates: int, now: datetime
    ) -> set[str]:
        """Insert the records whose webhook id is new (ids within `records` are distinct)
        and count `duplicates` plus every record found already stored as duplicates, all
        in one transaction. Returns the ids inserted."""
        ...

    async def add_tallies(self, counts: Mapping[tuple[str, datetime], int]) -> None:
        """Add each count to its (outcome, minute) row of `webhook_tallies`, in one
        transaction (rejections, counted in memory by the writer)."""
        ...

    async def close(self) -> None: ...


def open_store(database: Database) -> InboxStore:
    if not database.is_sqlite:
        return PostgresInboxStore(database)
    if database.sqlite_file is not None:
        return SqliteInboxStore(database)
    return SqlAlchemyInboxStore(database)


class SqlAlchemyInboxStore:
    max_in_flight = 1

    def __init__(self, database: Database) -> None:
        self._database = database

    async def store(
        self, records: Sequence[InboxRecord], *, duplicates: int, now: datetime
    ) -> set[str]:
        async with self._database.transaction() as conn:
            inserted = await inbox.store_batch(conn, records, now=now)
            counted = duplicates + len(records) - len(inserted)
            if counted:
                await webhook_tallies.increment(
                    conn, webhook_tallies.DUPLICATE, now=now, by=counted
                )
        return inserted

    async def add_tallies(self, counts: Mapping[tuple[str, datetime], int]) -> None:
        async with self._database.transaction() as conn:
            for (outcome, minute), by in counts.items():
                await webhook_tallies.increment(conn, outcome, now=minute, by=by)

    async def close(self) -> None:
        return None


# -- PostgreSQL ----------------------------------------------------------------------------

_PG_STORE = """
WITH new AS (
    INSERT INTO inbound_webhooks
        (webhook_id, received_at, event_type, provider_instance_id, payload)
    SELECT batch.webhook_id, $1::timestamptz, batch.event_type, batch.instance_id,
           batch.payload::jsonb
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
        AS batch (webhook_id, event_type, instance_id, payload)
    ON CONFLICT (webhook_id) DO NOTHING
    RETURNING webhook_id
), counted AS (
    SELECT $6::bigint - (SELECT count(*) FROM new) AS duplicates
), tally AS (
    INSERT INTO webhook_tallies (minute, outcome, count)
    SELECT $7::timestamptz, $8::text, duplicates FROM counted WHERE duplicates > 0
    ON CONFLICT (minute, outcome)
    DO UPDATE SET count = webhook_tallies.count + excluded.count
)
SELECT webhook_id FROM new
"""

_PG_TALLY = """
INSERT INTO webhook_tallies (minute, outcome, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[])
ON CONFLICT (minute, outcome) DO UPDATE SET count = webhook_tallies.count + excluded.count
"""


class PostgresInboxStore:
    """Batches on up to `max_in_flight` pooled connections, one statement each."""

    def __init__(self, database: Database, *, max_in_flight: int = 4) -> None:
        self._database = database
        self.max_in_flight = max_in_flight

    async def store(
        self, records: Sequence[InboxRecord], *, duplicates: int, now: datetime
    ) -> set[str]:
        arguments = (
            now,
            [record.webhook_id for record in records],
            [record.event_type for record in records],
            [record.provider_instance_id for record in records],
            [record.payload_json for record in records],
            len(records) + duplicates,
            webhook_tallies.minute_of(now),
            webhook_tallies.DUPLICATE,
        )

        dropped = False  # the statement failed as on a lost connection, which was dropped

        async def store_batch() -> set[str]:
            nonlocal dropped
            # On the pooled connection's driver connection: SQLAlchemy's execution and
            # result layers cost about a third of the writer's Python time per batch
            # (measured at 30 events a batch), for one statement whose rows are strings.
            async with self._database.autocommit() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert driver is not None
                try:
                    rows = await driver.fetch(_PG_STORE, *arguments)
                except Exception as error:
                    if is_database_outage(error):
                        # As SQLAlchemy does after its own statements: a connection that
                        # failed so is dropped, not returned to the pool.
                        await conn.invalidate()
                        dropped = True
                    raise
                return {row[0] for row in rows}

        # Safe to repeat on a new connection: had the statement committed, its ids come
        # back as known and each request is still answered 200. A connection that died
        # while idle in the pool (a server restart, an idle timeout) fails its first
        # statement, and the batch is stored on a new one; a real outage fails both.
        try:
            return await store_batch()
        except Exception:
            if not dropped:
                raise
        return await store_batch()

    async def add_tallies(self, counts: Mapping[tuple[str, datetime], int]) -> None:
        keys = list(counts)
        arguments = (
            [webhook_tallies.minute_of(minute) for _, minute in keys],
            [outcome for outcome, _ in keys],
            list(counts.values()),
        )
        async with self._database.transaction() as conn:
            await conn.exec_driver_sql(_PG_TALLY, arguments)

    async def close(self) -> None:
        return None


# -- SQLite --------------------------------------------------------------------------------


def _log_checkpoint_failure(done: asyncio.Future[None]) -> None:
    # A failed checkpoint loses nothing (the WAL keeps the rows); the next one retries.
    if not done.cancelled() and done.exception() is not None:
        log.warning("inbox.checkpoint_failed", error=str(done.exception()))


class SqliteInboxStore:
    """One sqlite3 connection, used only from the store's one thread."""

    max_in_flight = 1  # SQLite has one writer at a time anyway
    # Rows stored between checkpoints: a batch dirties about a page per row (the webhook-id
    # index is random), so this keeps the WAL near SQLite's default of 1,000 pages.
    checkpoint_rows = 1000
    # The WAL size past which the writer checkpoints between batches so it starts over;
    # also the size a restarted WAL file is truncated back to. That checkpoint holds the
    # requests of one batch for its two fsyncs, so it should come rarely: at 10,000 rows a
    # second, 256 MB is one every 5 s or so, where 64 MB put one in the p99 latency.
    # Only sustained load gets here: between bursts the passive checkpoints catch up and
    # the WAL starts over by itself.
    wal_limit_bytes = 256 * 1024 * 1024

    def __init__(self, database: Database) -> None:
        assert database.sqlite_file is not None
        self._database = database
        self._wal_path = f"{database.sqlite_file}-wal"
        self._batches = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-store")
        self._checkpoint_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="inbox-checkpoint"
        )
        self._connection: sqlite3.Connection | None = None
        self._checkpoint_connection: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[None] | None = None
        self._rows_since_checkpoint = 0
        self._insert = InboxInsert(_SQLITE)
        self._tally = webhook_tallies.DriverIncrement(_SQLITE)
        self.checkpoints = 0

    async def store(
        self, records: Sequence[InboxRecord], *, duplicates: int, now: datetime
    ) -> set[str]:
        loop = asyncio.get_running_loop()
        inserted = await loop.run_in_executor(self._thread, self._store, records, duplicates, now)
        self._rows_since_checkpoint += len(inserted)
        if self._rows_since_checkpoint >= self.checkpoint_rows and (
            self._checkpointing is None or self._checkpointing.done()
        ):
            self._rows_since_checkpoint = 0
            self._checkpointing = loop.run_in_executor(self._checkpoint_thread, self._checkpoint)
            self._checkpointing.add_done_callback(_log_checkpoint_failure)
        return inserted

    def _known(self, ids: list[str]) -> set[str]:
        """Which of the ids are stored already (in the writer's open transaction)."""
        assert self._connection is not None
        known: set[str] = set()
        for start in range(0, len(ids), 500):  # stay under SQLite's variable limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(
                row[0]
                for row in self._connection.execute(
                    f"SELECT webhook_id FROM inbound_webhooks WHERE webhook_id IN ({marks})",
                    chunk,
                )
            )
        return known

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self._wal_path)
        except OSError:
            return 0

    def _checkpoint(self) -> None:
        """Copy the WAL into the database without blocking the writer (PASSIVE)."""
        if self._checkpoint_connection is None:
            self._checkpoint_connection = self._database.open_sqlite_connection()
        self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._database.open_sqlite_connection()
            self._connection.execute("PRAGMA wal_autocheckpoint=0")  # see the module notes
            self._connection.execute(f"PRAGMA journal_size_limit={self.wal_limit_bytes}")
        return self._connection

    def _store(self, records: Sequence[InboxRecord], duplicates: int, now: datetime) -> set[str]:
        connection = self._open()
        with self._database.sqlite_write_lock:
            new = self._store_in_transaction(connection, records, duplicates, now)
        self._batches += 1
        if self._batches % 16 == 0 and self._wal_bytes() > self.wal_limit_bytes:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        return {record.webhook_id for record in new}

    def _store_in_transaction(
        self,
        connection: sqlite3.Connection,
        records: Sequence[InboxRecord],
        duplicates: int,
        now: datetime,
    ) -> Sequence[InboxRecord]:
        """The batch's transaction; returns the records inserted."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Duplicates are rare: insert the whole batch first (ON CONFLICT skips known
            # ids) and look up which ids were known only if some row was skipped.
            cursor = connection.executemany(self._insert.sql, self._insert.rows(records, now))
            existing: set[str] = set()
            new: Sequence[InboxRecord] = records
            if cursor.rowcount != len(records):
                connection.execute("ROLLBACK")
                connection.execute("BEGIN IMMEDIATE")
                existing = self._known([record.webhook_id for record in records])
                new = [record for record in records if record.webhook_id not in existing]
                connection.executemany(self._insert.sql, self._insert.rows(new, now))
            counted = duplicates + len(existing)
            if counted:
                connection.execute(
                    self._tally.sql,
                    self._tally.params(webhook_tallies.DUPLICATE, now=now, by=counted),
                )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return new

    async def add_tallies(self, counts: Mapping[tuple[str, datetime], int]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._add_tallies, dict(counts))

    def _add_tallies(self, counts: dict[tuple[str, datetime], int]) -> None:
        connection = self._open()
        with self._database.sqlite_write_lock:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    self._tally.sql,
                    [
                        self._tally.params(outcome, now=minute, by=by)
                        for (outcome, minute), by in counts.items()
                    ],
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._database.close_sqlite_connection(self._connection)
                self._connection = None

        def close_checkpoint_connection() -> None:
            if self._checkpoint_connection is not None:
                self._database.close_sqlite_connection(self._checkpoint_connection)
                self._checkpoint_connection = None

        loop = asyncio.get_running_loop()
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        await loop.run_in_executor(self._thread, close_connection)
        await loop.run_in_executor(self._checkpoint_thread, close_checkpoint_connection)
        self._thread.shutdown(wait=True)
        self._checkpoint_thread.shutdown(wait=True)
