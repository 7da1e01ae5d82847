"""Revision 0013: on PostgreSQL the instances table leaves half of each page free, so the
updates that change no indexed column (a webhook or poll confirming a status) can stay on
their page; on SQLite, where there is no such setting, it changes nothing. Both ways keep
every row."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection

from service.clock import ManualClock
from service.db.engine import Database
from service.db.migrations import alembic_config, upgrade_to_head
from tests.support.provisioning import add_instance

T0 = datetime(2026, 12, 1, tzinfo=UTC)


async def down_to_0012(database: Database) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0012")

    async with database.engine.begin() as conn:
        await conn.run_sync(run)


async def instance_options(database: Database) -> list[str]:
    if database.dialect != "postgresql":
        return []
    async with database.read() as conn:
        query = sa.text("SELECT reloptions FROM pg_class WHERE relname = 'instances'")
        options = (await conn.execute(query)).scalar_one()
    return list(options or [])


async def instance_ids(database: Database) -> list[str]:
    async with database.read() as conn:
        return list((await conn.execute(sa.text("SELECT id FROM instances ORDER BY id"))).scalars())


async def test_instances_keep_room_for_updates_and_going_down_resets_it(
    empty_database: Database,
) -> None:
    database = empty_database
    await upgrade_to_head(database.engine)
    await down_to_0012(database)
    before = [await add_instance(database, ManualClock(T0)) for _ in range(2)]
    assert await instance_options(database) == []

    await upgrade_to_head(database.engine)
    if database.dialect == "postgresql":
        assert await instance_options(database) == ["fillfactor=50"]
    else:
        assert await instance_options(database) == []
    after = await add_instance(database, ManualClock(T0))
    assert await instance_ids(database) == sorted([*before, after])

    await down_to_0012(database)
    assert await instance_options(database) == []
    assert await instance_ids(database) == sorted([*before, after])
