"""Everything the running service holds open, opened in order and closed in reverse.

This is the composition root's runtime half: `create_app` asks for a `Resources` in its
lifespan; tests may build one themselves and hand it in (then they close it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import structlog

from service.clock import Clock, SystemClock
from service.db.engine import Database
from service.db.migrations import check_schema_is_current, upgrade_to_head
from service.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    clock: Clock
    database: Database


@asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    migrate: bool = False,
) -> AsyncIterator[Resources]:
    """Open the database (migrating first if asked), check its schema, then yield."""
    async with AsyncExitStack() as stack:
        if database is None:
            database = Database.from_url(
                settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
            )
            stack.push_async_callback(database.close)
        if migrate:
            await upgrade_to_head(database.engine)
        await check_schema_is_current(database.engine)
        log.info("resources.opened", database=database.dialect)
        yield Resources(settings=settings, clock=clock or SystemClock(), database=database)
        log.info("resources.closing")
