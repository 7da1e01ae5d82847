"""Small aggregate reads for /health and /metrics: counts by status and backlog ages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


@dataclass(frozen=True, slots=True)
class Stuck:
    count: int
    oldest_since: datetime | None


async def stuck_instances(
    conn: AsyncConnection, now: datetime, threshold_seconds: float
) -> dict[str, Stuck]:
    """Instances `pending` (since created) or `provisioning` (since submitted) for longer
    than the threshold: how many, and since when the oldest has waited."""
    cutoff = now - timedelta(seconds=threshold_seconds)
    c = instances.c
    since = {
        "pending": c.created_at,
        "provisioning": sa.func.coalesce(c.submitted_at, c.created_at),
    }
    found: dict[str, Stuck] = {}
    for status, column in since.items():
        row = (
            await conn.execute(
                sa.select(sa.func.count(), sa.func.min(column)).where(
                    c.status == status, column < cutoff
                )
            )
        ).one()
        found[status] = Stuck(int(row[0]), _aware(row[1]))
    return found
