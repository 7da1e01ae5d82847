"""How long instances have been in their current status: for stuck-instance alerts
(`/metrics`) and the dashboard's list of instances stuck in a transition.

An instance entered its status at its latest event moving to that status (one probe of
the `(instance_id, to_status, at)` index per instance in a transitional status; those are
few however large the fleet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.health_counts import _aware
from service.db.models import instance_events, instances
from service.domain import Status

TRANSITIONAL_STATUSES = (
    Status.PENDING,
    Status.PROVISIONING,
    Status.STARTING,
    Status.STOPPING,
    Status.DELETING,
)

_e = instance_events.c
_i = instances.c


def _entered() -> sa.ScalarSelect[object]:
    return (
        sa.select(sa.func.max(_e.at))
        .where(_e.instance_id == _i.id, _e.to_status == _i.status)
        .scalar_subquery()
    )


@dataclass(frozen=True, slots=True)
class Waiting:
    id: str
    name: str
    status: Status
    entered_at: datetime | None


async def oldest_entry_by_status(
    conn: AsyncConnection, statuses: Sequence[Status] = TRANSITIONAL_STATUSES
) -> dict[str, datetime]:
    """For each of `statuses` that some instance is in: when the earliest of them entered."""
    entered = _entered().label("entered")
    inner = (
        sa.select(_i.status, entered)
        .where(_i.status.in_([status.value for status in statuses]))
        .subquery()
    )
    rows = await conn.execute(
        sa.select(inner.c.status, sa.func.min(inner.c.entered)).group_by(inner.c.status)
    )
    found = {}
    for status, when in rows:
        aware = _aware(when)
        if aware is not None:
            found[status] = aware
    return found


async def longest_waiting(
    conn: AsyncConnection,
    *,
    entered_before: datetime,
    limit: int,
    statuses: Sequence[Status] = TRANSITIONAL_STATUSES,
) -> list[Waiting]:
    """Instances in one of `statuses` since before `entered_before`, longest first."""
    entered = _entered().label("entered")
    inner = (
        sa.select(_i.id, _i.name, _i.status, entered)
        .where(_i.status.in_([status.value for status in statuses]))
        .subquery()
    )
    rows = await conn.execute(
        sa.select(inner)
        .where(inner.c.entered < entered_before)
        .order_by(inner.c.entered, inner.c.id)
        .limit(limit)
    )
    return [
        Waiting(row.id, row.name, Status(row.status), _aware(row.entered)) for row in rows
    ]
