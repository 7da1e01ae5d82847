"""The API's hottest query (one instance by our id or Novita id), on the path that
measured fastest for each database (README, Benchmarks):

- SQLite (a file): a `query_only` sqlite3 connection used inline on the event loop. An
  indexed read in WAL mode never waits for a lock and takes microseconds, where a hop to
  aiosqlite's thread and back costs several times the read itself.
- PostgreSQL: a `BatchedLookup`: concurrent lookups share one SQLAlchemy query (and one
  pooled connection) per round trip.

Values are decoded by SQLAlchemy (on SQLite by each column type's own result processor),
so both paths return exactly what `repository.find_instance` returns (a test holds them
equal on both databases).

`find_derived` also remembers what a caller derived from a row (the API: the instance's
JSON body) together with the row it came from, and reuses it while the database returns
an identical row. The row is still read on every call, so the answer is never staler than
a plain read; only the decoding and rendering of an unchanged row is skipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
        # SQLite rows come from sqlite3 as stored: decoded by each column type's result
        # processor. PostgreSQL rows come through SQLAlchemy, decoded already.
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        if database.is_sqlite:
            self._sql = str(_FIND.compile(dialect=dialect))
            for position, column in enumerate(instances.columns):
                process = column.type.dialect_impl(dialect).result_processor(dialect, None)
                if process is not None:
                    self._processors.append((position, process))
        else:
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

        async def fetch() -> list[tuple[Any, ...]]:
            async with self._database.read() as conn:
                result = await conn.execute(_FIND_MANY, {"keys": keys})
                return [tuple(row) for row in result]

        return await once_more_if_disconnected(fetch)

    async def close(self) -> None:
        if self._sqlite is not None:
            self._database.close_sqlite_connection(self._sqlite)
            self._sqlite = None
        if self._lookup is not None:
            await self._lookup.close()


def _keys_answered(row: tuple[Any, ...]) -> tuple[Any, Any]:
    """A row answers a lookup by our id and one by its Novita id."""
    return row[_ID], row[_NOVITA_ID]
