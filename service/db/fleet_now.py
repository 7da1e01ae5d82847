"""What the fleet runs right now: instances, GPUs and cost per hour of those running."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import instances
from service.domain import Status

RUNNING = (Status.RUNNING, Status.READY)


@dataclass(frozen=True, slots=True)
class RunningNow:
    instances: int
    gpus: int
    cost_per_hour: Decimal  # GPUs x price per GPU-hour (unknown prices count as 0)


async def running_now(conn: AsyncConnection) -> RunningNow:
    c = instances.c
    row = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(c.gpu_num), 0),
                sa.func.coalesce(sa.func.sum(c.gpu_num * sa.func.coalesce(c.price_per_hour, 0)), 0),
            ).where(c.status.in_([status.value for status in RUNNING]))
        )
    ).one()
    return RunningNow(int(row[0]), int(row[1]), Decimal(str(row[2])))
