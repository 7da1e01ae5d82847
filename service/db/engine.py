"""Engine setup for SQLite (aiosqlite) and PostgreSQL (asyncpg), and the unit of work.

SQLite is configured deliberately: WAL (readers never block the writer), `busy_timeout`
(a writer waits instead of failing at once), foreign keys on, and writers start with
`BEGIN IMMEDIATE`, so two writers never both read and then deadlock on the upgrade to a
write lock. PostgreSQL writers lock the rows they change (`SELECT ... FOR UPDATE`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_BEGIN_OPTION = "novita_sqlite_begin"


def create_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 5000, echo: bool = False
) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, sqlite_busy_timeout_ms, echo)
    return create_async_engine(
        url,
        echo=echo,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def _create_sqlite_engine(url: str, busy_timeout_ms: int, echo: bool) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000})
    in_memory = make_url(url).database in (None, "", ":memory:")

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

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self._owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str, *, sqlite_busy_timeout_ms: int = 5000) -> Database:
        engine = create_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
        return cls(engine, owns_engine=True)

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
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot; nothing written here is committed."""
        async with self.engine.connect() as conn, conn.begin() as txn:
            try:
                yield conn
            finally:
                await txn.rollback()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:  # any failure means "not reachable"; the caller reports it
            return False
        return True

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()
