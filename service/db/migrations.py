"""Running Alembic from inside the service, and checking the database is at the code's head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import SchemaMismatchError

# alembic.ini and migrations/ live at the project root, next to the `service` package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config() -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the tree always has revisions
        raise SchemaMismatchError("the migration tree has no head revision")
    return head


async def upgrade_to_head(engine: AsyncEngine) -> None:
    def _upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def downgrade_to_base(engine: AsyncEngine) -> None:
    def _downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    async with engine.begin() as conn:
        await conn.run_sync(_downgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    def _current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def check_schema_is_current(engine: AsyncEngine) -> None:
    """Raise `SchemaMismatchError` with what to do when the database is not at head."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is None:
        raise SchemaMismatchError(
            "the database has no schema yet; run `novita-lifecycle migrate` "
            "(or start with `serve --migrate`)"
        )
    if current not in known:
        raise SchemaMismatchError(
            f"the database is at revision {current}, which this version of the service does "
            "not know (the database is ahead of the code); run a newer release of the service"
        )
    raise SchemaMismatchError(
        f"the database is at revision {current} but the code expects {head}; run "
        "`novita-lifecycle migrate` (or start with `serve --migrate`)"
    )
