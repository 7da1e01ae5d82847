"""The one place the service opens database connections, and the unit of work.

Every connection, whoever uses it, is made here with one set of settings per engine:

- SQLite (aiosqlite, and the plain `sqlite3` connections of the two fast paths) is set up
  by `configure_sqlite`: WAL (readers never block the writer), `busy_timeout` (a writer
  waits instead of failing at once), foreign keys on; writers start with `BEGIN
  IMMEDIATE`, so two writers never both read and then deadlock on the upgrade to a write
  lock.
- PostgreSQL (asyncpg) connections come only from SQLAlchemy's pool, so every option of
  `DATABASE_URL` (`ssl=require`, `prepared_statement_cache_size=0` for pgbouncer, ...)
  is read by SQLAlchemy's asyncpg dialect and means what SQLAlchemy documents, and the
  pool's size bounds everything the service holds open. Writers lock the rows they change
  (`SELECT ... FOR UPDATE`); reads run in autocommit (no BEGIN/ROLLBACK round trips).

A transaction may leave notes (`note_after_commit`, e.g. "this instance is now
`running`") that the `Database` hands to its `commit_listeners` once it has committed
(never after a rollback): a worker in this process then acts at once instead of at its
next pass. Notes are hints within one process; the database stays the truth.

SQLite work through SQLAlchemy runs on aiosqlite's threads, off the event loop. A commit
or rollback, once begun, is finished even if the task is cancelled meanwhile: abandoning
it halfway would leave the connection's state unknown.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from service.db.point_reads import InstancePointReader

log = structlog.get_logger(__name__)

_BEGIN_OPTION = "novita_sqlite_begin"
_NOTES = "novita_commit_notes"
# Commit-note topic: notifications were queued in the outbox (items: our instance ids).
NOTIFICATIONS_QUEUED = "notifications.queued"
# What a commit listener gets: topic → the items noted under it (e.g. instance ids).
CommitNotes = Mapping[str, tuple[str, ...]]
# asyncpg waits 60 s for a connection by default; a server that does not answer in 10 s is
# down for our purposes, and the request waiting on it should fail rather than hang.
POSTGRES_CONNECT_TIMEOUT_S = 10.0
T = TypeVar("T")


def configure_sqlite(
    connection: Any, *, busy_timeout_ms: int, wal: bool = True, query_only: bool = False
) -> None:
    """Apply the service's SQLite settings to a new DB-API connection (sqlite3 or the
    adapter SQLAlchemy wraps around aiosqlite); the only place they are written."""
    cursor = connection.cursor()
    try:
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if query_only:
            cursor.execute("PRAGMA query_only=ON")
    finally:
        cursor.close()


def sqlite_file(url: str | sa.URL) -> str | None:
    """The database file of a SQLite URL, or None (in memory, or not SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return str(parsed.database)


def create_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 5000, echo: bool = False
) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, sqlite_busy_timeout_ms, echo)
    connect_args: dict[str, Any] = {}
    if "timeout" not in parsed.query:
        connect_args["timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    # No pool_pre_ping: it costs a round trip per checkout on the hot read path. A dead
    # connection fails its first statement, is invalidated, and that request answers 503.
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,  # error messages would carry the row's values (envs, secrets)
        pool_size=10,
        max_overflow=10,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _create_sqlite_engine(url: str, busy_timeout_ms: int, echo: bool) -> AsyncEngine:
    in_memory = sqlite_file(url) is None
    engine = create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,  # see create_engine
        connect_args={"timeout": busy_timeout_ms / 1000},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so writers can say IMMEDIATE.
        dbapi_connection.isolation_level = None
        configure_sqlite(dbapi_connection, busy_timeout_ms=busy_timeout_ms, wal=not in_memory)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


async def finish_even_if_cancelled(operation: Coroutine[Any, Any, T]) -> T:
    """Run `operation` to its end even if the calling task is cancelled meanwhile; the
    cancellation is raised once it has finished (asyncio.shield alone would return early
    and leave it running in the background)."""
    task = asyncio.ensure_future(operation)
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            # Kept even when the operation has just ended: a cancel that arrives between its
            # end and this task's wake-up must still reach the caller, or a loop told to
            # stop would run on.
            interrupted = exc
        except BaseException:  # the operation's own error: task.result() raises it below
            pass
    if interrupted is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise interrupted
    return task.result()


def note_after_commit(conn: AsyncConnection, topic: str, item: str) -> None:
    """Tell this process's commit listeners `item` under `topic` once the transaction of
    `conn` (a `Database.transaction`) commits; dropped if it rolls back."""
    notes: dict[str, list[str]] = conn.info.setdefault(_NOTES, {})
    notes.setdefault(topic, []).append(item)


class Database:
    """The engine plus the ways to use it: a write transaction, a read, and (SQLite file)
    plain connections and a whole transaction on a thread, for the fast paths that
    measured faster on them.

    Own only what you create: a `Database` built by `from_url` disposes its engine on
    `close()`; one handed an engine leaves it to the caller.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owns_engine: bool = False,
        sqlite_busy_timeout_ms: int = 5000,
    ) -> None:
        self.engine = engine
        self.sqlite_busy_timeout_ms = sqlite_busy_timeout_ms
        self._owns_engine = owns_engine
        if engine.dialect.name == "postgresql":
            # Same pool, no transaction: a read is one round trip.
            self._read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._read_engine = engine
        # Plain sqlite3 connections handed out and not yet closed (the leak check).
        self.open_sqlite_connections: set[sqlite3.Connection] = set()
        self.point_reader: InstancePointReader | None = None
        # What was still open when the database closed (None until then; see close()).
        self.left_open: list[str] | None = None
        # Called with the notes of each committed transaction that left some.
        self.commit_listeners: list[Callable[[CommitNotes], None]] = []
        # Held by this process's plain-connection writers (the webhook store, and
        # run_sync_transaction) from BEGIN to COMMIT: one waiting for the other gets SQLite's
        # write lock the moment it is free, where SQLite's busy handler would poll for it
        # in sleeps of up to 100 ms. Writers through aiosqlite still meet SQLite's own.
        self.sqlite_write_lock = threading.Lock()
        # run_sync_transaction: its thread, engine and connections (one, unless it broke).
        self._sync_thread: ThreadPoolExecutor | None = None
        self._sync_engine: sa.Engine | None = None
        self._sync_connections: list[sqlite3.Connection] = []

    @classmethod
    def from_url(cls, url: str, *, sqlite_busy_timeout_ms: int = 5000) -> Database:
        engine = create_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
        database = cls(engine, owns_engine=True, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
        database.point_reader = InstancePointReader.for_database(database)
        return database

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite database file, or None (PostgreSQL, or SQLite in memory)."""
        return sqlite_file(self.engine.url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits when the block ends, rolls back if it raises."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            await conn.begin()
            conn.info.pop(_NOTES, None)  # left by a transaction made outside this method
            try:
                yield conn
            except BaseException:
                conn.info.pop(_NOTES, None)
                await finish_even_if_cancelled(conn.rollback())
                raise
            notes = conn.info.pop(_NOTES, None)
            await finish_even_if_cancelled(conn.commit())
        if notes:
            self._tell_listeners({topic: tuple(items) for topic, items in notes.items()})

    def _tell_listeners(self, notes: CommitNotes) -> None:
        for listener in self.commit_listeners:
            try:
                listener(notes)
            except Exception:  # a listener's bug must not fail the committed work
                log.exception("database.commit_listener_failed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection; nothing written through it is committed. On PostgreSQL
        each statement runs on its own (autocommit), so a single statement that writes
        (an upsert) is committed by itself."""
        async with self._read_engine.connect() as conn:
            try:
                yield conn
            finally:
                await finish_even_if_cancelled(conn.rollback())

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL: a connection on which each statement commits by itself, so a write
        that is one statement costs one round trip (no BEGIN, no COMMIT)."""
        if self.is_sqlite:
            raise RuntimeError("autocommit connections are for PostgreSQL")
        async with self._read_engine.connect() as conn:
            yield conn

    async def run_sync_transaction(self, work: Callable[[sa.Connection], T]) -> T:
        """SQLite file only: `work(conn)` in one `BEGIN IMMEDIATE` transaction, run start to
        end on a thread of its own over a plain connection it keeps; committed when `work`
        returns, rolled back if it raises. Commit notes are not supported.

        Why it exists beside `transaction()`: it measured faster (`bench/webhook_ingest.py`,
        the inbox applier's pass). Through aiosqlite every statement is a trip to its thread
        and back through the event loop, and under load each trip waits behind the requests
        the loop serves while the transaction holds SQLite's one write lock, which the
        webhook writer needs for every batch it acknowledges; here the lock is held only as
        long as SQLite and Python take. `work` is SQLAlchemy Core on a synchronous
        connection, so the same function runs on PostgreSQL through
        `AsyncConnection.run_sync` in a `transaction()`.

        The connection is kept (opening and closing one per transaction cost milliseconds)
        and takes `sqlite_write_lock` around each transaction; its commits never checkpoint
        the WAL themselves (SQLite would, at every commit once the WAL passes 1,000 pages,
        copying and fsyncing on this thread): the webhook store's checkpoints, and every
        other connection's commits, keep the WAL short.
        """
        if self.sqlite_file is None:
            raise RuntimeError("run_sync_transaction is for a SQLite file")
        if self._sync_thread is None:
            self._sync_thread = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="sqlite-transactions"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._sync_thread, self._run_sync_transaction, work)

    def _run_sync_transaction(self, work: Callable[[sa.Connection], T]) -> T:
        if self._sync_engine is None:
            # Lends SQLAlchemy's statement compilation and type handling to the one plain
            # connection (StaticPool), made by `_sync_connection` (again if it ever breaks).
            self._sync_engine = sa.create_engine(
                "sqlite://", creator=self._sync_connection, poolclass=StaticPool
            )
        with self.sqlite_write_lock, self._sync_engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result

    def _sync_connection(self) -> sqlite3.Connection:
        connection = self.open_sqlite_connection()
        connection.execute("PRAGMA wal_autocheckpoint=0")  # see run_sync_transaction
        self._sync_connections.append(connection)
        return connection

    def _close_sync_transactions(self) -> None:
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        for connection in self._sync_connections:
            self.close_sqlite_connection(connection)
        self._sync_connections.clear()

    def open_sqlite_connection(self, *, query_only: bool = False) -> sqlite3.Connection:
        """A plain sqlite3 connection to this database's file, set up like every other
        (autocommit: the caller says BEGIN). Close it with `close_sqlite_connection`."""
        path = self.sqlite_file
        if path is None:
            raise RuntimeError("plain connections exist only for a SQLite file")
        connection = sqlite3.connect(
            path,
            timeout=self.sqlite_busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        configure_sqlite(
            connection, busy_timeout_ms=self.sqlite_busy_timeout_ms, query_only=query_only
        )
        self.open_sqlite_connections.add(connection)
        return connection

    def close_sqlite_connection(self, connection: sqlite3.Connection) -> None:
        self.open_sqlite_connections.discard(connection)
        connection.close()

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:  # any failure means "not reachable"; the caller reports it
            return False
        return True

    async def close(self) -> None:
        """Close every connection this `Database` opened (closing twice does nothing).

        A connection still checked out of the pool, or a plain SQLite connection still
        open, at this point is a leak (whoever took it never gave it back): each is
        logged as a warning, `database.closed_with_connections_open`, and kept in
        `left_open` (None until closed), which the tests hold to be empty."""
        if self.left_open is not None:
            return
        left_open: list[str] = []
        pool: Any = self.engine.pool
        checked_out = pool.checkedout() if self._owns_engine else 0
        if checked_out:
            left_open.append(f"{checked_out} pooled connection(s) checked out")
        if self._sync_thread is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._sync_thread, self._close_sync_transactions)
            self._sync_thread.shutdown(wait=True)
            self._sync_thread = None
        if self._owns_engine:
            if self.point_reader is not None:
                await self.point_reader.close()
            await self.engine.dispose()
        # The plain SQLite connections of the fast paths are closed by their owners first.
        if self.open_sqlite_connections:
            left_open.append(f"{len(self.open_sqlite_connections)} plain SQLite connection(s)")
        self.left_open = left_open
        if left_open:
            log.warning("database.closed_with_connections_open", left_open=left_open)
