"""A write transaction on a SQLite file, run start to end on a thread of its own.

Through aiosqlite every statement of a transaction is a trip to its thread and back
through the event loop, and under load each trip waits behind the requests the loop is
serving, while the transaction holds SQLite's one write lock: the webhook writer, which
needs that lock for every batch it acknowledges, waited out the whole of it. Here the
transaction's work (SQLAlchemy Core on a synchronous connection, so the same functions run
on PostgreSQL through `AsyncConnection.run_sync`) runs in one hop: the lock is held only
for as long as SQLite and Python take, and the loop goes on serving meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from service.db.engine import Database

T = TypeVar("T")


class PlainSqliteTransactions:
    """`run(work)`: `work(conn)` in one `BEGIN IMMEDIATE` transaction on a fresh plain
    connection (`Database.open_sqlite_connection`, closed after), on a thread."""

    def __init__(self, database: Database) -> None:
        if database.sqlite_file is None:
            raise RuntimeError("plain transactions are for a SQLite file")
        self._database = database
        self._connection: sqlite3.Connection | None = None
        # The engine only lends SQLAlchemy's statement compilation and type handling to
        # the connection opened for each transaction (NullPool: it keeps none).
        self._engine = sa.create_engine("sqlite://", creator=self._current, poolclass=NullPool)

    def _current(self) -> sqlite3.Connection:
        assert self._connection is not None
        return self._connection

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        self._connection = self._database.open_sqlite_connection()
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
                return result
        finally:
            self._database.close_sqlite_connection(self._connection)
            self._connection = None
