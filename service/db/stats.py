"""Small aggregate reads for /health and /metrics: counts by status and backlog ages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import inbox
from service.db.models import instances, outbox


@dataclass(frozen=True, slots=True)
class ServiceCounts:
    instances_by_status: dict[str, int]
    outbox_by_status: dict[str, int]
    oldest_pending_notification: datetime | None
    inbox_backlog: int
    oldest_unapplied_webhook: datetime | None


def _aware(value: object) -> datetime | None:
    """Aggregates lose the column type on SQLite: parse its text, attach UTC."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(when, datetime)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def service_counts(conn: AsyncConnection) -> ServiceCounts:
    by_status = await conn.execute(
        sa.select(instances.c.status, sa.func.count()).group_by(instances.c.status)
    )
    by_outbox = await conn.execute(
        sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)
    )
    oldest_pending = (
        await conn.execute(
            sa.select(sa.func.min(outbox.c.created_at)).where(outbox.c.status == "pending")
        )
    ).scalar()
    backlog, oldest_webhook = await inbox.backlog(conn)
    return ServiceCounts(
        instances_by_status={status: count for status, count in by_status},
        outbox_by_status={status: count for status, count in by_outbox},
        oldest_pending_notification=_aware(oldest_pending),
        inbox_backlog=backlog,
        oldest_unapplied_webhook=oldest_webhook,
    )
