"""The inbox of provider webhooks (`inbound_webhooks`): all SQL for storing, claiming,
marking and pruning them.

`store_batch` is the group-commit writer's work for one batch: it tells new webhook ids
from ones already stored and inserts the new ones in a single driver-level executemany.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import sqlite_applier_rows
from service.db.models import inbound_webhooks


@dataclass(frozen=True, slots=True)
class InboxRecord:
    webhook_id: str
    event_type: str
    provider_instance_id: str | None
    # The envelope exactly as the sender sent it (already checked to be a JSON object):
    # stored as is, byte for byte, rather than parsed and serialised again.
    payload_json: str


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    id: int
    webhook_id: str
    received_at: datetime
    event_type: str
    provider_instance_id: str | None
    # As stored (PostgreSQL: its jsonb text); parsed only for the events that need it.
    payload_json: str

    @property
    def payload(self) -> dict[str, Any]:
        parsed = json.loads(self.payload_json)
        return parsed if isinstance(parsed, dict) else {}


_STORED_COLUMNS = ("webhook_id", "received_at", "event_type", "provider_instance_id", "payload")


class InboxInsert:
    """The inbox INSERT for one dialect, compiled once from Core, run with the driver's
    executemany: for a batch of small rows SQLAlchemy's per-row parameter handling costs
    far more than the insert itself. The time goes through its column type's bind
    processor, so rows read back exactly as rows written by the SQLAlchemy path."""

    def __init__(self, dialect: Dialect) -> None:
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        # inline(): no implicit RETURNING of the primary key, which executemany would drop.
        statement = (
            insert(inbound_webhooks).inline().on_conflict_do_nothing(index_elements=["webhook_id"])
        )
        columns = [inbound_webhooks.c[name] for name in _STORED_COLUMNS]
        compiled = statement.values({column: sa.bindparam(column.name) for column in columns})
        self.sql = str(compiled.compile(dialect=dialect))
        # The type as this dialect runs it (on SQLite: to SQLAlchemy's text format).
        time_type = inbound_webhooks.c.received_at.type.dialect_impl(dialect)
        self.process_time = time_type.bind_processor(dialect)

    def rows(self, records: Sequence[InboxRecord], now: datetime) -> list[tuple[Any, ...]]:
        """The driver's parameters for `records`, received at `now`."""
        # The JSON column's own bind processor would serialise a Python value to the same
        # text the driver is given here: the payload already is that text.
        stamp = self.process_time(now) if self.process_time is not None else now
        return [
            (
                record.webhook_id,
                stamp,
                record.event_type,
                record.provider_instance_id,
                record.payload_json,
            )
            for record in records
        ]


_INSERTS: dict[str, InboxInsert] = {}


async def store_batch(
    conn: AsyncConnection, records: Sequence[InboxRecord], *, now: datetime
) -> set[str]:
    """Insert the records whose webhook id is new; return the ids inserted.

    Runs in the caller's write transaction: the ids already stored are read first (one
    indexed query), then the new rows are inserted in one executemany. A concurrent
    writer inserting the same id in between is still harmless: ON CONFLICT skips it.
    """
    if not records:
        return set()
    ids = [record.webhook_id for record in records]
    existing = set(
        (
            await conn.execute(
                sa.select(inbound_webhooks.c.webhook_id).where(
                    inbound_webhooks.c.webhook_id.in_(ids)
                )
            )
        ).scalars()
    )
    new = [record for record in records if record.webhook_id not in existing]
    if not new:
        return set()
    dialect = conn.dialect
    insert = _INSERTS.get(dialect.name)
    if insert is None:
        insert = _INSERTS[dialect.name] = InboxInsert(dialect)
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    await driver.executemany(insert.sql, insert.rows(new, now))
    return {record.webhook_id for record in new}


_CLAIMED = (
    inbound_webhooks.c.id,
    inbound_webhooks.c.webhook_id,
    inbound_webhooks.c.received_at,
    inbound_webhooks.c.event_type,
    inbound_webhooks.c.provider_instance_id,
    sa.cast(inbound_webhooks.c.payload, sa.Text),
)


# PostgreSQL: the claim as the driver's own statement, rows as the driver decodes them
# (timestamptz: aware, in UTC), without SQLAlchemy's per-row type processing, which cost
# about as much as the rest of reading a batch. Its meaning is the Core query's below.
_PG_CLAIM = """
SELECT id, webhook_id, received_at, event_type, provider_instance_id, payload::text
FROM inbound_webhooks WHERE processed_at IS NULL{among}
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_PG_AMONG = " AND id = ANY($2::bigint[])"


def claim(
    conn: sa.Connection, *, limit: int, ids: Sequence[int] | None = None
) -> list[StoredWebhook]:
    """The oldest unapplied events (of `ids`, when given), locked for this transaction
    (others skip them). Synchronous: see `claim_unprocessed` for an async connection."""
    if conn.dialect.name == "sqlite":
        return [
            StoredWebhook(*row) for row in sqlite_applier_rows.claim(conn, limit=limit, ids=ids)
        ]
    if conn.dialect.name == "postgresql":
        if ids is None:
            rows = conn.exec_driver_sql(_PG_CLAIM.format(among=""), (limit,))
        else:
            rows = conn.exec_driver_sql(_PG_CLAIM.format(among=_PG_AMONG), (limit, list(ids)))
        return [StoredWebhook(*row) for row in rows]
    c = inbound_webhooks.c
    query = sa.select(*_CLAIMED).where(c.processed_at.is_(None))
    if ids is not None:
        query = query.where(_one_of(conn, c.id, list(ids)))
    query = query.order_by(c.id).limit(limit).with_for_update(skip_locked=True)
    return [StoredWebhook(*row) for row in conn.execute(query)]


# PostgreSQL: the claim that also settles, server-side, every event the applier needs
# nothing more for: a type it does not apply, no instance id, or an instance we do not
# know (the outcomes `applier._triage` gives, decided as it would on the rows of that
# moment). Those are marked in the same statement and come back as (received_at, outcome)
# only, so Python never handles them; the rest come back whole, to be triaged again on the
# instance rows the applier then reads under lock.
_PG_CLAIM_TRIAGED = """
WITH claimed AS (
    SELECT id, webhook_id, received_at, event_type, provider_instance_id, payload,
        CASE
            WHEN event_type <> ALL($3::text[]) THEN 'ignored_type'
            WHEN provider_instance_id IS NULL THEN 'no_instance_id'
            WHEN NOT EXISTS (
                SELECT FROM instances
                WHERE instances.novita_instance_id = inbound_webhooks.provider_instance_id
            ) THEN 'unknown_instance'
        END AS settled
    FROM inbound_webhooks WHERE processed_at IS NULL
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE inbound_webhooks SET processed_at = $2::timestamptz, outcome = claimed.settled
    FROM claimed WHERE inbound_webhooks.id = claimed.id AND claimed.settled IS NOT NULL
)
SELECT id, webhook_id, received_at, event_type, provider_instance_id, payload::text
FROM claimed WHERE settled IS NULL
UNION ALL
SELECT NULL, settled, received_at, NULL, NULL, NULL FROM claimed WHERE settled IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class Settled:
    """An event the claim gave its outcome to (PostgreSQL's `claim_settling`)."""

    received_at: datetime
    outcome: str


def claim_settling(
    conn: sa.Connection, *, limit: int, now: datetime, applied_types: Sequence[str]
) -> tuple[list[StoredWebhook], list[Settled]]:
    """PostgreSQL: `claim`, with every event that needs no instance read settled and
    marked processed at `now` in the same statement (see `_PG_CLAIM_TRIAGED`). Returns the
    events left to apply, oldest first, and the ones settled."""
    if now.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    events: list[StoredWebhook] = []
    settled: list[Settled] = []
    for row in conn.exec_driver_sql(_PG_CLAIM_TRIAGED, (limit, now, list(applied_types))):
        if row[0] is None:
            settled.append(Settled(row[2], row[1]))
        else:
            events.append(StoredWebhook(*row))
    events.sort(key=lambda event: event.id)
    return events, settled


async def claim_unprocessed(conn: AsyncConnection, *, limit: int) -> list[StoredWebhook]:
    """The oldest unapplied events, locked for this transaction (others skip them)."""
    return await conn.run_sync(lambda sync: claim(sync, limit=limit))


# PostgreSQL: a whole batch's outcomes in one statement, as two arrays joined by `unnest`.
_PG_MARK = """
UPDATE inbound_webhooks SET processed_at = $1::timestamptz, outcome = batch.outcome
FROM unnest($2::bigint[], $3::text[]) AS batch (id, outcome)
WHERE inbound_webhooks.id = batch.id
"""


def mark(conn: sa.Connection, outcomes: dict[int, str], *, now: datetime) -> None:
    """Stamp each event processed with its outcome: one UPDATE on PostgreSQL, one per
    distinct outcome on SQLite."""
    if not outcomes:
        return
    if conn.dialect.name == "postgresql":
        if now.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        conn.exec_driver_sql(_PG_MARK, (now, list(outcomes), list(outcomes.values())))
        return
    by_outcome: dict[str, list[int]] = {}
    for row_id, outcome in outcomes.items():
        by_outcome.setdefault(outcome, []).append(row_id)
    sqlite_applier_rows.mark(conn, by_outcome, now=now)


def _one_of(
    conn: sa.Connection, column: sa.ColumnElement[Any], ids: list[int]
) -> sa.ColumnElement[bool]:
    """`column IN ids`. On PostgreSQL one array parameter (one prepared statement whatever
    their number); on SQLite the ids (integers we read) are written into the statement
    rather than bound one by one, which for hundreds of them was most of its cost."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.BigInteger)))
    return column.in_(sa.bindparam("ids", ids, expanding=True, literal_execute=True))


async def prune(conn: AsyncConnection, *, received_before: datetime, limit: int) -> int:
    """Forget up to `limit` processed events received before the cut-off, oldest first
    (unprocessed ones are kept); return how many."""
    c = inbound_webhooks.c
    oldest = (
        sa.select(c.id)
        .where(c.received_at < received_before, c.processed_at.is_not(None))
        .order_by(c.received_at)
        .limit(limit)
    )
    result = await conn.execute(
        inbound_webhooks.delete().where(c.id.in_(oldest.scalar_subquery()))
    )
    return result.rowcount or 0


async def backlog(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """How many events wait to be applied, and when the oldest arrived."""
    c = inbound_webhooks.c
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(c.received_at)).where(c.processed_at.is_(None))
        )
    ).one()
    oldest = row[1]
    if isinstance(oldest, str):  # SQLite aggregates lose the column type
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(row[0]), oldest
