"""The API's hottest query (one instance by our id or Novita id), on the path that
measured fastest for each database (README, Benchmarks):

- SQLite (a file): a `query_only` sqlite3 connection used inline on the event loop. An
  indexed read in WAL mode never waits for a lock and takes microseconds, where a hop to
  aiosqlite's thread and back costs several times the read itself.
- PostgreSQL: a `BatchedLookup`: concurrent lookups share one query (and one pooled
  connection) per round trip. The query is sent on the pooled connection's asyncpg
  connection itself (SQLAlchemy's public `driver_connection`): SQLAlchemy made that
  connection from `DATABASE_URL` (TLS, timeouts, its JSON codecs) and the pool still
  bounds and recycles it, but its statement execution, which costs more than this indexed
  read, is skipped. A URL that turns SQLAlchemy's prepared-statement cache off
  (`prepared_statement_cache_size=0`, for pgbouncer) keeps SQLAlchemy's own execution, so
  the option means what it says; a connection that turns out dead is invalidated in the
  pool and the lookup tried once more on another, as SQLAlchemy would.

Values are decoded by each column type's own result processor (SQLAlchemy's type
processing, for the column types the database reports), so every path returns exactly
what `repository.find_instance` returns (a test holds them equal on both databases).

`find_derived` also remembers what a caller derived from a row (the API: the instance's
JSON body) together with the row it came from, and reuses it while the database returns
an identical row. The row is still read on every call, so the answer is never staler than
a plain read; only the decoding and rendering of an unchanged row is skipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from service.db.batched_lookup import BatchedLookup
from service.db.disconnects import once_more_if_disconnected
from service.db.models import instances

if TYPE_CHECKING:
    from service.db.engine import Database

_FIND = sa.select(instances).where(
    sa.or_(
        instances.c.id == sa.bindparam("key"),
        instances.c.novita_instance_id == sa.bindparam("key2"),
    )
)
_KEYS = sa.bindparam("keys", type_=ARRAY(sa.Text))
_FIND_MANY = sa.select(instances).where(
    sa.or_(instances.c.id == sa.any_(_KEYS), instances.c.novita_instance_id == sa.any_(_KEYS))
)
_ID = list(instances.columns).index(instances.c.id)
_NOVITA_ID = list(instances.columns).index(instances.c.novita_instance_id)
T = TypeVar("T")
R = TypeVar("R")
# Rows (and what was derived from them) remembered per derive function.
MEMO_SIZE = 4096


class InstancePointReader:
    """`find(key)` → the instance row as a mapping of column name to Python value."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._names = [column.name for column in instances.columns]
        dialect = database.engine.dialect
        self._sqlite: sqlite3.Connection | None = None
        self._lookup: BatchedLookup | None = None
        # Rows come from sqlite3 as stored, or from asyncpg with only its codecs applied:
        # decoded by each column type's result processor. Rows SQLAlchemy executed for
        # (PostgreSQL without its statement cache) are decoded already: none.
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        # PostgreSQL: the query as sent on the driver connection; None when SQLAlchemy's
        # prepared-statement cache is off (then SQLAlchemy executes it).
        self._driver_sql: str | None = None
        self._types_known = database.is_sqlite
        if database.is_sqlite:
            self._sql = str(_FIND.compile(dialect=dialect))
            self._processors = _processors(dialect, [None] * len(instances.columns))
        else:
            cache_size = database.engine.url.query.get("prepared_statement_cache_size", "100")
            if str(cache_size).strip() != "0":
                self._driver_sql = str(_FIND_MANY.compile(dialect=dialect))
            self._lookup = BatchedLookup(self._fetch_many, _keys_answered)
        self._memos: dict[Callable[..., Any], dict[str, tuple[tuple[Any, ...], Any]]] = {}

    @classmethod
    def for_database(cls, database: Database) -> InstancePointReader | None:
        """A reader, or None where the plain path is as fast (SQLite in memory)."""
        if database.is_sqlite and database.sqlite_file is None:
            return None
        return cls(database)

    async def find(self, key: str) -> Mapping[str, Any] | None:
        raw = await self._fetch(key)
        return None if raw is None else self._decode(raw)

    async def find_derived(
        self, key: str, derive: Callable[[R], T], convert: Callable[[Mapping[str, Any]], R]
    ) -> T | None:
        """`derive(convert(find(key)))`, reused while the stored row is the same.
        `derive` and `convert` must be pure functions of the row."""
        raw = await self._fetch(key)
        if raw is None:
            return None
        memo = self._memos.setdefault(derive, {})
        remembered = memo.get(key)
        if remembered is not None and remembered[0] == raw:
            result: T = remembered[1]
            return result
        result = derive(convert(self._decode(raw)))
        if remembered is None and len(memo) >= MEMO_SIZE:
            del memo[next(iter(memo))]  # the oldest entry
        memo[key] = (raw, result)
        return result

    def _decode(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        values = list(raw)
        for position, process in self._processors:
            values[position] = process(values[position])
        return dict(zip(self._names, values, strict=True))

    async def _fetch(self, key: str) -> tuple[Any, ...] | None:
        if self._lookup is not None:
            return await self._lookup.get(key)
        if self._sqlite is None:
            self._sqlite = self._database.open_sqlite_connection(query_only=True)
        row: tuple[Any, ...] | None = self._sqlite.execute(self._sql, (key, key)).fetchone()
        return row

    async def _fetch_many(self, keys: list[str]) -> list[tuple[Any, ...]]:
        if self._driver_sql is not None:
            return await self._fetch_many_on_driver(self._driver_sql, keys)

        async def fetch() -> list[tuple[Any, ...]]:
            async with self._database.read() as conn:
                result = await conn.execute(_FIND_MANY, {"keys": keys})
                return [tuple(row) for row in result]

        return await once_more_if_disconnected(fetch)

    async def _fetch_many_on_driver(self, sql: str, keys: list[str]) -> list[tuple[Any, ...]]:
        for last_try in (False, True):
            # A plain checkout: nothing runs through SQLAlchemy on it, so it begins no
            # transaction and has nothing to roll back (no `Database.read()` needed).
            async with self._database.engine.connect() as conn:
                driver: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                try:
                    if not self._types_known:
                        await self._learn_types(driver, sql)
                    rows = await driver.fetch(sql, keys)
                except Exception:
                    if not driver.is_closed():
                        raise
                    # Died while idle in the pool (a server restart, an idle timeout): out
                    # of the pool with it, and once more on another connection.
                    await conn.invalidate()
                    if last_try:
                        raise
                    continue
                return [tuple(row) for row in rows]
        raise AssertionError("unreachable")

    async def _learn_types(self, driver: asyncpg.Connection, sql: str) -> None:
        """Each column's result processor for the type the server reports (what SQLAlchemy
        reads from a cursor's description), once."""
        statement = await driver.prepare(sql)
        types = [attribute.type.oid for attribute in statement.get_attributes()]
        self._processors = _processors(self._database.engine.dialect, types)
        self._types_known = True

    async def close(self) -> None:
        if self._sqlite is not None:
            self._database.close_sqlite_connection(self._sqlite)
            self._sqlite = None
        if self._lookup is not None:
            await self._lookup.close()


def _processors(
    dialect: sa.Dialect, column_types: list[Any]
) -> list[tuple[int, Callable[[Any], Any]]]:
    """The result processor of each column that has one, by position."""
    found: list[tuple[int, Callable[[Any], Any]]] = []
    for position, (column, column_type) in enumerate(
        zip(instances.columns, column_types, strict=True)
    ):
        process = column.type.dialect_impl(dialect).result_processor(dialect, column_type)
        if process is not None:
            found.append((position, process))
    return found


def _keys_answered(row: tuple[Any, ...]) -> tuple[Any, Any]:
    """A row answers a lookup by our id and one by its Novita id."""
    return row[_ID], row[_NOVITA_ID]
