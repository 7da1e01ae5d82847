"""Migrations on both databases: up from empty, no drift against the models, down to base."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service.db.engine import Database
from service.db.migrations import (
    check_schema_is_current,
    current_revision,
    downgrade_to_base,
    head_revision,
    upgrade_to_head,
)
from service.db.models import metadata
from service.errors import SchemaMismatchError


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_upgrade_from_empty_matches_models_and_downgrades(empty_database: Database) -> None:
    engine = empty_database.engine
    await upgrade_to_head(engine)
    assert await current_revision(engine) == head_revision()

    async with engine.connect() as conn:
        differences = await conn.run_sync(_diff)
    assert differences == [], f"models and migrations disagree: {differences}"

    await downgrade_to_base(engine)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert set(tables) <= {"alembic_version"}


async def test_schema_check_names_the_command_to_run(empty_database: Database) -> None:
    with pytest.raises(SchemaMismatchError, match="novita-lifecycle migrate"):
        await check_schema_is_current(empty_database.engine)

    await upgrade_to_head(empty_database.engine)
    await check_schema_is_current(empty_database.engine)  # at head: no error


async def test_schema_check_refuses_a_database_ahead_of_the_code(
    empty_database: Database,
) -> None:
    await upgrade_to_head(empty_database.engine)
    async with empty_database.transaction() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed9999'"))
    with pytest.raises(SchemaMismatchError, match="ahead of the code"):
        await check_schema_is_current(empty_database.engine)
