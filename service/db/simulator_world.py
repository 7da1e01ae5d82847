"""SQL of the built-in simulator's saved world: one row, read at start, replaced on save."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.db.engine import Database
from service.db.models import simulator_world

_ROW_ID = 1


async def load_world(database: Database) -> dict[str, Any] | None:
    async with database.read() as conn:
        world = await conn.scalar(
            sa.select(simulator_world.c.world).where(simulator_world.c.id == _ROW_ID)
        )
    return world if isinstance(world, dict) else None


async def save_world(database: Database, world: dict[str, Any], now: datetime) -> None:
    async with database.transaction() as conn:
        updated = await conn.execute(
            sa.update(simulator_world)
            .where(simulator_world.c.id == _ROW_ID)
            .values(world=world, saved_at=now)
        )
        if updated.rowcount == 0:
            await conn.execute(
                sa.insert(simulator_world).values(id=_ROW_ID, world=world, saved_at=now)
            )
