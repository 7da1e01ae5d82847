"""The API's hottest query (one instance by our id or Novita id) on the bare driver.

SQLAlchemy's per-statement machinery (greenlet hops, events, result set-up) costs several
times more than the indexed lookup itself. This reader compiles the same Core statement
once per dialect and runs it on a driver connection kept for the purpose: on SQLite a
`query_only` sqlite3 connection used inline (a WAL reader never waits for a lock), on
PostgreSQL a small asyncpg pool with the statement prepared once per connection. Rows are
decoded by column type into the same values the SQLAlchemy path produces (a test holds the
two paths equal on both databases).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url

from service.db.models import instances
from service.db.types import JSONType, UTCDateTime

_FIND = sa.select(instances).where(
    sa.or_(
        instances.c.id == sa.bindparam("key"),
        instances.c.novita_instance_id == sa.bindparam("key2"),
    )
)
Decoder = Callable[[Any], Any]


def _sqlite_datetime(value: Any) -> Any:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _pg_datetime(value: Any) -> Any:
    return None if value is None else value.astimezone(UTC)


def _json(value: Any) -> Any:
    return None if value is None else json.loads(value)


def _decimal_from_sqlite(scale: int) -> Decoder:
    def decode(value: Any) -> Any:
        return None if value is None else Decimal(f"{value:.{scale}f}")

    return decode


def _identity(value: Any) -> Any:
    return value


def _decoders(dialect: str) -> list[Decoder]:
    decoders: list[Decoder] = []
    for column in instances.columns:
        kind = column.type
        if isinstance(kind, UTCDateTime):
            decoders.append(_sqlite_datetime if dialect == "sqlite" else _pg_datetime)
        elif kind is JSONType or isinstance(kind, sa.JSON):
            decoders.append(_json)
        elif isinstance(kind, sa.Numeric) and dialect == "sqlite":
            decoders.append(_decimal_from_sqlite(kind.scale or 0))
        else:
            decoders.append(_identity)
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
            compiled = _FIND.compile(dialect=asyncpg_dialect.dialect())  # type: ignore[no-untyped-call]
            self._sql = str(compiled)
            self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._busy_timeout_ms = busy_timeout_ms
        self._sqlite: sqlite3.Connection | None = None
        self._pool: Any = None  # asyncpg.Pool (asyncpg ships no type information)
        self._pool_lock = asyncio.Lock()

    async def find(self, key: str) -> Mapping[str, Any] | None:
        raw = await (self._find_sqlite(key) if self._dialect == "sqlite" else self._find_pg(key))
        if raw is None:
            return None
        return {
            name: decode(value)
            for name, decode, value in zip(self._names, self._decoders, raw, strict=True)
        }

    async def _find_sqlite(self, key: str) -> tuple[Any, ...] | None:
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

    async def _find_pg(self, key: str) -> tuple[Any, ...] | None:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=4, statement_cache_size=16
                    )
        async with self._pool.acquire() as connection:
            record = await connection.fetchrow(self._sql, key, key)
        return tuple(record.values()) if record is not None else None

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
