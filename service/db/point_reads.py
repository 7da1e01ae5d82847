"""The API's hottest query (one instance by our id or Novita id) on the bare driver.

SQLAlchemy's per-statement machinery (greenlet hops, events, result set-up) costs several
times more than the indexed lookup itself. This reader compiles the same Core statement
once per dialect and runs it on a driver connection kept for the purpose: on SQLite a
`query_only` sqlite3 connection used inline (a WAL reader never waits for a lock), on
PostgreSQL a `BatchedLookup`: concurrent lookups share one query per round trip. Rows are
decoded by column type into the same values the SQLAlchemy path produces (a test holds the
two paths equal on both databases).

`find_derived` also remembers what a caller derived from a row (the API: the instance's
JSON body) together with the raw row it came from, and reuses it while the database
returns an identical row. The row is still read on every call, so the answer is never
staler than a plain read; only the decoding and rendering of an unchanged row is skipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url

from service.db.batched_lookup import BatchedLookup
from service.db.models import instances
from service.db.types import JSONType, UTCDateTime

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
Decoder = Callable[[Any], Any]
T = TypeVar("T")
R = TypeVar("R")
# Rows (and what was derived from them) remembered per derive function.
MEMO_SIZE = 4096


def _sqlite_datetime(value: Any) -> Any:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _pg_datetime(value: Any) -> Any:
    return None if value is None else value.astimezone(UTC)


def _json(value: Any) -> Any:
    return None if value is None else orjson.loads(value)


def _decimal_from_sqlite(scale: int) -> Decoder:
    def decode(value: Any) -> Any:
        return None if value is None else Decimal(f"{value:.{scale}f}")

    return decode


def _decoders(dialect: str) -> list[tuple[int, Decoder]]:
    """(column position, decoder) for the columns whose driver value needs decoding."""
    decoders: list[tuple[int, Decoder]] = []
    for position, column in enumerate(instances.columns):
        kind = column.type
        if isinstance(kind, UTCDateTime):
            decoders.append((position, _sqlite_datetime if dialect == "sqlite" else _pg_datetime))
        elif kind is JSONType or isinstance(kind, sa.JSON):
            decoders.append((position, _json))
        elif isinstance(kind, sa.Numeric) and dialect == "sqlite":
            decoders.append((position, _decimal_from_sqlite(kind.scale or 0)))
    return decoders


class InstancePointReader:
    """`find(key)` → the instance row as a mapping of column name to Python value."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        parsed = make_url(url)
        self._dialect = parsed.get_backend_name()
        self._names = [column.name for column in instances.columns]
        self._decoders = _decoders(self._dialect)
        if self._dialect == "sqlite":
            self._sql = str(_FIND.compile(dialect=sqlite_dialect.dialect()))
            self._path = str(parsed.database)
        else:
            # asyncpg's own dialect compiles to its `$1` placeholders.
            compiled = _FIND_MANY.compile(dialect=asyncpg_dialect.dialect())  # type: ignore[no-untyped-call]
            dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            self._lookup = BatchedLookup(dsn, str(compiled), _keys_answered)
        self._busy_timeout_ms = busy_timeout_ms
        self._sqlite: sqlite3.Connection | None = None
        self._memos: dict[Callable[..., Any], dict[str, tuple[tuple[Any, ...], Any]]] = {}

    async def find(self, key: str) -> Mapping[str, Any] | None:
        raw = await self._fetch(key)
        return None if raw is None else self._decode(raw)

    async def find_derived(
        self, key: str, derive: Callable[[R], T], convert: Callable[[Mapping[str, Any]], R]
    ) -> T | None:
        """`derive(convert(find(key)))`, reused while the stored row is byte-for-byte the
        same. `derive` and `convert` must be pure functions of the row."""
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
        for position, decode in self._decoders:
            values[position] = decode(values[position])
        return dict(zip(self._names, values, strict=True))

    async def _fetch(self, key: str) -> tuple[Any, ...] | None:
        if self._dialect == "sqlite":
            return self._find_sqlite(key)
        return await self._lookup.get(key)

    def _find_sqlite(self, key: str) -> tuple[Any, ...] | None:
        if self._sqlite is None:
            connection = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_ms / 1000,
                check_same_thread=False,
                isolation_level=None,
            )
            connection.execute("PRAGMA query_only=ON")
            self._sqlite = connection
        row: tuple[Any, ...] | None = self._sqlite.execute(self._sql, (key, key)).fetchone()
        return row

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._dialect != "sqlite":
            await self._lookup.close()


def _keys_answered(row: tuple[Any, ...]) -> tuple[Any, Any]:
    """A row answers a lookup by our id and one by its Novita id."""
    return row[_ID], row[_NOVITA_ID]
