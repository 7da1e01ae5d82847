"""Everything the running service holds open, opened in order and closed in reverse.

This is the composition root's runtime half: `create_app` asks for a `Resources` in its
lifespan; tests may build one themselves and hand it in (then they close it).
Order: database (schema checked) → built-in simulator (if configured) → Novita client.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import structlog

from service.clock import Clock, SystemClock
from service.db.engine import Database
from service.db.migrations import check_schema_is_current, upgrade_to_head
from service.ingest import InboxWriter
from service.novita import NovitaClient
from service.settings import Settings
from service.simulator import Simulator, SimulatorConfig

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    clock: Clock
    database: Database
    novita: NovitaClient
    simulator: Simulator | None = None
    inbox: InboxWriter | None = None
    # Who holds claims and leases taken by this process (unique per process start).
    owner: str = ""
    # Readiness probes may reach private/loopback endpoints: set by configuration, and
    # always with the built-in simulator, whose port mappings answer on loopback.
    allow_private_probe_targets: bool = False


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    migrate: bool = False,
) -> AsyncIterator[Resources]:
    """Open what the service needs, yield it, and close what was opened here in reverse."""
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        if database is None:
            database = Database.from_url(
                settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
            )
            stack.push_async_callback(database.close)
        if migrate:
            await upgrade_to_head(database.engine)
        await check_schema_is_current(database.engine)

        simulator: Simulator | None = None
        if settings.novita_simulator:
            # A fresh random key per process: the in-process simulator only answers us.
            key = secrets.token_urlsafe(24)
            simulator = Simulator(SimulatorConfig(api_keys=(key,)))
            await simulator.start(host="127.0.0.1", port=0)
            stack.push_async_callback(simulator.stop)
            novita = NovitaClient.from_settings(
                settings, api_key=key, base_url=simulator.base_url, clock=clock
            )
        else:
            novita = NovitaClient.from_settings(settings, clock=clock)
        stack.push_async_callback(novita.close)

        inbox = InboxWriter(database, clock, max_queue=settings.inbound_queue_size)
        inbox.start()
        stack.push_async_callback(inbox.stop)

        log.info(
            "resources.opened",
            database=database.dialect,
            novita="simulator" if simulator else "novita",
        )
        yield Resources(
            settings=settings,
            clock=clock,
            database=database,
            novita=novita,
            simulator=simulator,
            inbox=inbox,
            owner=new_owner_id(),
            allow_private_probe_targets=settings.allow_private_probe_targets
            or simulator is not None,
        )
        log.info("resources.closing")
