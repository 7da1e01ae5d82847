"""Engine setup for SQLite (aiosqlite) and PostgreSQL (asyncpg), and the unit of work.

SQLite is configured deliberately: WAL (readers never block the writer), `busy_timeout`
(a writer waits instead of failing at once), foreign keys on, and writers start with
`BEGIN IMMEDIATE`, so two writers never both read and then deadlock on the upgrade to a
write lock. PostgreSQL writers lock the rows they change (`SELECT ... FOR UPDATE`).

Reads take a cheaper path than writes. On PostgreSQL they run in autocommit (no BEGIN and
ROLLBACK round trips). On SQLite, aiosqlite hands every call to a thread and back, which
costs far more than a point read itself (and the threads fight over the GIL), so reads
use `query_only` connections whose calls run inline on the event loop: in WAL mode a
reader never waits for a lock, so an indexed read blocks the loop for microseconds.
Long scans (reports) should use `read(inline=False)`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.db.point_reads import InstancePointReader

_BEGIN_OPTION = "novita_sqlite_begin"


def create_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 5000, echo: bool = False
) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, sqlite_busy_timeout_ms, echo)
    # No pool_pre_ping: it costs a round trip per checkout on the hot read path. A dead
    # connection fails its first statement, is invalidated, and that request answers 503.
    return create_async_engine(
        url,
        echo=echo,
        pool_size=10,
        max_overflow=10,
        pool_recycle=1800,
    )


class _InlineSqliteConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the caller's thread (read-only use).

    aiosqlite keeps no public hook for this, so it overrides the one method every call
    goes through; `aiosqlite` is pinned below its next minor version for that reason.
    """

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def _inline_sqlite_creator(path: str, busy_timeout_ms: int) -> Callable[[], Any]:
    async def create() -> aiosqlite.Connection:
        def connector() -> sqlite3.Connection:
            return sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, check_same_thread=False, uri=False
            )

        connection = _InlineSqliteConnection(connector, iter_chunk_size=256)
        connection._thread.daemon = True
        return await connection

    return create


def _create_sqlite_engine(
    url: str, busy_timeout_ms: int, echo: bool, *, inline_reads: bool = False
) -> AsyncEngine:
    database = make_url(url).database
    in_memory = database in (None, "", ":memory:")
    if inline_reads:
        engine = create_async_engine(
            url, echo=echo, async_creator=_inline_sqlite_creator(str(database), busy_timeout_ms)
        )
    else:
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000}
        )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so writers can say IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if inline_reads:
            # A write on an inline connection could block the event loop: forbid it.
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """The engine plus the two ways to use it: a write transaction and a read connection.

    Own only what you create: a `Database` built by `from_url` disposes its engine on
    `close()`; one handed an engine leaves it to the caller.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        read_engine: AsyncEngine | None = None,
        point_reader: InstancePointReader | None = None,
        owns_engine: bool = False,
        sqlite_busy_timeout_ms: int = 5000,
    ) -> None:
        self.engine = engine
        self.sqlite_busy_timeout_ms = sqlite_busy_timeout_ms
        self._owns_engine = owns_engine
        self.point_reader = point_reader
        self._inline_reads = read_engine is not None
        if read_engine is not None:
            self._read_engine = read_engine
        elif engine.dialect.name == "postgresql":
            # Same pool, no transaction: a read is one round trip.
            self._read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._read_engine = engine

    @classmethod
    def from_url(cls, url: str, *, sqlite_busy_timeout_ms: int = 5000) -> Database:
        engine = create_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
        read_engine = None
        parsed = make_url(url)
        file_based = parsed.database not in (None, "", ":memory:")
        if parsed.get_backend_name() == "sqlite" and file_based:
            read_engine = _create_sqlite_engine(
                url, sqlite_busy_timeout_ms, echo=False, inline_reads=True
            )
        point_reader = (
            InstancePointReader(url, busy_timeout_ms=sqlite_busy_timeout_ms)
            if file_based or parsed.get_backend_name() != "sqlite"
            else None
        )
        return cls(
            engine,
            read_engine=read_engine,
            point_reader=point_reader,
            owns_engine=True,
            sqlite_busy_timeout_ms=sqlite_busy_timeout_ms,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits when the block ends, rolls back if it raises."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self, *, inline: bool = True) -> AsyncIterator[AsyncConnection]:
        """A read-only connection; nothing written through it is committed.

        `inline=False` keeps SQLite work off the event loop: use it for long scans.
        """
        engine = self._read_engine if inline else self.engine
        async with engine.connect() as conn:
            try:
                yield conn
            finally:
                await conn.rollback()

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:  # any failure means "not reachable"; the caller reports it
            return False
        return True

    async def close(self) -> None:
        if self._owns_engine:
            if self.point_reader is not None:
                await self.point_reader.close()
            if self._inline_reads:
                await self._read_engine.dispose()
            await self.engine.dispose()
