"""Deleting settled notifications once their retention has passed.

A notification is settled when nothing more will happen to it unless someone asks:
`delivered`, `cancelled` (its target answered 410 Gone), `no_target`, or `failed` (a dead
letter). Pending rows are never touched, and a redelivered row is pending again with a
fresh `updated_at`, so it starts its retention over once it settles again.

Rows go in bounded batches, oldest first (the `(status, updated_at)` index finds them),
together with their delivery attempts and redelivery records, in one short transaction
per batch. On PostgreSQL the chosen rows are locked (`FOR UPDATE SKIP LOCKED`): a
redelivery asked at that moment waits for the batch and then finds the row gone (404),
never half deleted; SQLite writers are serialised by `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import outbox, outbox_attempts, outbox_redeliveries


async def prune_settled(
    conn: AsyncConnection,
    *,
    statuses: Collection[str],
    settled_before: datetime,
    limit: int,
) -> int:
    """Delete up to `limit` notifications in `statuses` last changed before
    `settled_before`, with their attempts and redeliveries; return how many."""
    if "pending" in statuses:
        raise ValueError("pending notifications are never pruned")
    query = (
        sa.select(outbox.c.id)
        .where(outbox.c.status.in_(list(statuses)), outbox.c.updated_at < settled_before)
        .order_by(outbox.c.updated_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list((await conn.execute(query)).scalars())
    if not ids:
        return 0
    await conn.execute(outbox_attempts.delete().where(outbox_attempts.c.outbox_id.in_(ids)))
    await conn.execute(
        outbox_redeliveries.delete().where(outbox_redeliveries.c.outbox_id.in_(ids))
    )
    await conn.execute(outbox.delete().where(outbox.c.id.in_(ids)))
    return len(ids)
