"""Reads the reconciler's sweeps need: rows by id for a page of provider instances, the
live rows a relist must find at the provider, the running rows awaiting readiness (and
when each is probed next), and the transitional rows a listing watches (with their next
polls pushed back once seen)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import instances
from service.db.repository import instance_from_mapping
from service.domain import TERMINAL_STATUSES, TRANSITIONAL_STATUSES, Instance, Status


async def instances_by_id(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Instance]:
    if not ids:
        return {}
    rows = await conn.execute(sa.select(instances).where(instances.c.id.in_(list(ids))))
    return {row.id: instance_from_mapping(row._mapping) for row in rows}


async def live_provider_ids(conn: AsyncConnection, *, submitted_before: datetime) -> dict[str, str]:
    """Novita id → our id of every non-terminal row that has a Novita instance and was
    submitted before `submitted_before` (a create landing during a relist may be missing
    from a list taken before it, and is not lost)."""
    submitted = sa.func.coalesce(instances.c.submitted_at, instances.c.created_at)
    rows = await conn.execute(
        sa.select(instances.c.novita_instance_id, instances.c.id).where(
            instances.c.status.not_in([s.value for s in TERMINAL_STATUSES]),
            instances.c.novita_instance_id.is_not(None),
            submitted < submitted_before,
        )
    )
    return {row.novita_instance_id: row.id for row in rows}


async def running_instances(conn: AsyncConnection, *, limit: int) -> list[Instance]:
    """Instances Novita says run but whose readiness we have not confirmed, oldest first."""
    rows = await conn.execute(
        sa.select(instances)
        .where(instances.c.status == Status.RUNNING.value)
        .order_by(instances.c.running_at, instances.c.id)
        .limit(limit)
    )
    return [instance_from_mapping(row._mapping) for row in rows]


async def count_live_provider_rows(conn: AsyncConnection) -> int:
    """Our live rows that have a Novita instance (what a relist expects to list at least)."""
    count = await conn.scalar(sa.select(sa.func.count()).where(_polled()))
    return int(count or 0)


async def probe_again_at(conn: AsyncConnection, instance_id: str, at: datetime) -> None:
    """When the readiness worker probes this row next (its own pace, set with a verdict)."""
    await conn.execute(
        instances.update().where(instances.c.id == instance_id).values(next_probe_at=at)
    )


def _polled() -> sa.ColumnElement[bool]:
    """Live rows Novita knows (what the per-instance poll visits)."""
    return sa.and_(
        instances.c.status.not_in([s.value for s in TERMINAL_STATUSES]),
        instances.c.novita_instance_id.is_not(None),
    )


async def transitional_instances(conn: AsyncConnection, *, limit: int) -> list[Instance]:
    """Live rows Novita knows in a transitional status, the longest due first."""
    rows = await conn.execute(
        sa.select(instances)
        .where(_polled(), instances.c.status.in_([s.value for s in TRANSITIONAL_STATUSES]))
        .order_by(instances.c.next_check_at, instances.c.id)
        .limit(limit)
    )
    return [instance_from_mapping(row._mapping) for row in rows]


async def soonest_poll(
    conn: AsyncConnection, *, transitional: bool | None = None
) -> datetime | None:
    """When the next per-instance poll falls due (None: nothing to poll); of the rows in a
    transitional status (True), of the others (False), or of all (None)."""
    condition = _polled()
    if transitional is not None:
        moving = instances.c.status.in_([s.value for s in TRANSITIONAL_STATUSES])
        condition = sa.and_(condition, moving if transitional else sa.not_(moving))
    soonest: datetime | None = await conn.scalar(
        sa.select(sa.func.min(instances.c.next_check_at)).where(condition)
    )
    if soonest is not None and soonest.tzinfo is None:
        soonest = soonest.replace(tzinfo=UTC)  # SQLite keeps no zone; every time is UTC
    return soonest


async def postpone_polls(
    conn: AsyncConnection, instance_ids: Sequence[str], *, until: datetime, now: datetime
) -> int:
    """Push the next poll of these rows to `until` (a listing has just seen them): only
    rows still transitional, not claimed by anyone, and due sooner."""
    if not instance_ids:
        return 0
    result = await conn.execute(
        instances.update()
        .where(
            instances.c.id.in_(list(instance_ids)),
            instances.c.status.in_([s.value for s in TRANSITIONAL_STATUSES]),
            sa.or_(instances.c.claim_owner.is_(None), instances.c.claim_expires_at <= now),
            instances.c.next_check_at < until,
        )
        .values(next_check_at=until)
    )
    return int(result.rowcount or 0)
