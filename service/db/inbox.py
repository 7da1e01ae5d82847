"""The inbox of provider webhooks (`inbound_webhooks`): all SQL for storing, claiming,
marking and pruning them.

`store_batch` is the group-commit writer's one statement per batch: a multi-row INSERT
that skips webhook ids already stored (`ON CONFLICT DO NOTHING`) and returns the ids it
did insert, so the caller tells new events from duplicates without a second query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import inbound_webhooks


@dataclass(frozen=True, slots=True)
class InboxRecord:
    webhook_id: str
    event_type: str
    provider_instance_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    id: int
    webhook_id: str
    received_at: datetime
    event_type: str
    provider_instance_id: str | None
    payload: dict[str, Any]


async def store_batch(
    conn: AsyncConnection, records: Sequence[InboxRecord], *, now: datetime
) -> set[str]:
    """Insert the records whose webhook id is new; return the ids inserted."""
    if not records:
        return set()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(inbound_webhooks)
        .values(
            [
                {
                    "webhook_id": record.webhook_id,
                    "received_at": now,
                    "event_type": record.event_type,
                    "provider_instance_id": record.provider_instance_id,
                    "payload": record.payload,
                }
                for record in records
            ]
        )
        .on_conflict_do_nothing(index_elements=["webhook_id"])
        .returning(inbound_webhooks.c.webhook_id)
    )
    return set((await conn.execute(statement)).scalars())


async def claim_unprocessed(conn: AsyncConnection, *, limit: int) -> list[StoredWebhook]:
    """The oldest unapplied events, locked for this transaction (others skip them)."""
    c = inbound_webhooks.c
    query = (
        sa.select(inbound_webhooks)
        .where(c.processed_at.is_(None))
        .order_by(c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await conn.execute(query)
    return [
        StoredWebhook(
            id=m["id"],
            webhook_id=m["webhook_id"],
            received_at=m["received_at"],
            event_type=m["event_type"],
            provider_instance_id=m["provider_instance_id"],
            payload=dict(m["payload"]),
        )
        for m in (row._mapping for row in rows)
    ]


async def mark_processed(conn: AsyncConnection, outcomes: dict[int, str], *, now: datetime) -> None:
    for outcome in set(outcomes.values()):
        ids = [row_id for row_id, value in outcomes.items() if value == outcome]
        await conn.execute(
            inbound_webhooks.update()
            .where(inbound_webhooks.c.id.in_(ids))
            .values(processed_at=now, outcome=outcome)
        )


async def prune(conn: AsyncConnection, *, received_before: datetime) -> int:
    """Forget processed events received before the cut-off (unprocessed ones are kept)."""
    c = inbound_webhooks.c
    result = await conn.execute(
        inbound_webhooks.delete().where(
            c.received_at < received_before, c.processed_at.is_not(None)
        )
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
