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
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import structlog

from service.clock import Clock, SystemClock
from service.db.call_window import SharedCallWindow
from service.db.engine import Database
from service.db.migrations import check_schema_is_current, upgrade_to_head
from service.db.simulator_world import load_world, save_world
from service.fleet_figures import FleetFigures
from service.ingest import InboxWriter
from service.metrics import APPLY_LAG_BUCKETS, Histogram
from service.novita import NovitaClient
from service.provisioning.catalogue import ProvisioningCaches
from service.settings import Settings
from service.simulator import Simulator, SimulatorConfig, persistence

log = structlog.get_logger(__name__)


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Resources:
    settings: Settings
    clock: Clock
    database: Database
    novita: NovitaClient
    simulator: Simulator | None = None
    inbox: InboxWriter | None = None
    # Who holds claims and leases taken by this process: one id per Resources, made here,
    # so every worker of the process claims under the same name (and never under "").
    owner: str = field(default_factory=new_owner_id)
    # Readiness probes may reach private/loopback endpoints: set by configuration, and
    # always with the built-in simulator, whose port mappings answer on loopback.
    allow_private_probe_targets: bool = False

    @cached_property
    def figures(self) -> FleetFigures:
        """The counts /health shows, read by a background task (the app's lifespan)."""
        return FleetFigures(
            self.database, self.clock, stuck_after_seconds=self.settings.stuck_instance_seconds
        )

    @cached_property
    def apply_lag(self) -> Histogram:
        """Stored → applied, for each webhook this process's applier applies (/metrics)."""
        return Histogram(APPLY_LAG_BUCKETS)

    @cached_property
    def caches(self) -> ProvisioningCaches:
        """Novita's catalogue, templates and capacity blocks, cached for this process."""
        return ProvisioningCaches.create(self.novita, self.clock, self.settings)


async def _restored_world(database: Database, simulator: Simulator) -> dict[str, Any] | None:
    """The world the built-in simulator left in this database, loaded into `simulator`
    (None: a fresh database, or a saved world this version cannot read: start afresh)."""
    world = await load_world(database)
    if world is None:
        return None
    try:
        persistence.restore(simulator, world)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("simulator.world_unreadable", error=str(exc))
        await simulator.reset()
        return None
    log.info("simulator.world_restored", instances=len(simulator.instances()))
    return world


async def _save_world(database: Database, clock: Clock, world: dict[str, Any]) -> None:
    await save_world(database, world, clock.now())


def _shared_starts(settings: Settings, database: Database) -> SharedCallWindow | None:
    """The window the rate limit is shared through: on PostgreSQL, unless turned off. (The
    built-in simulator is each process's own Novita: it never shares.)"""
    if database.is_sqlite or not settings.rate_limit_shared:
        return None
    return SharedCallWindow(database)


@asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    simulator: Simulator | None = None,
    migrate: bool = False,
) -> AsyncIterator[Resources]:
    """Open what the service needs, yield it, and close what was opened here in reverse.

    A `database` or `simulator` handed in is already open (tests): used, not closed; a
    simulator handed in is Novita (with its first API key) whatever the settings say."""
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

        built_in = simulator is None and settings.novita_simulator
        if simulator is not None:
            novita = NovitaClient.from_settings(
                settings,
                api_key=simulator.config.api_keys[0],
                base_url=simulator.base_url,
                clock=clock,
                shared_starts=_shared_starts(settings, database),
            )
        elif built_in:
            # A fresh random key per process: the in-process simulator only answers us.
            key = secrets.token_urlsafe(24)
            # A fresh seed per start too: ids never repeat those of an earlier world.
            simulator = Simulator(SimulatorConfig(api_keys=(key,), seed=secrets.randbits(32)))
            world = await _restored_world(database, simulator)
            await simulator.start(
                host="127.0.0.1", port=0, gateway_port=persistence.gateway_port(world)
            )
            stack.push_async_callback(simulator.stop)
            if world is not None:
                await persistence.reopen_endpoints(simulator, world)
            keeper = persistence.WorldKeeper(
                simulator, partial(_save_world, database, clock)
            )
            keeper.start()
            stack.push_async_callback(keeper.stop)  # saves once more, before the simulator stops
            novita = NovitaClient.from_settings(
                settings, api_key=key, base_url=simulator.base_url, clock=clock
            )
        else:
            novita = NovitaClient.from_settings(
                settings, clock=clock, shared_starts=_shared_starts(settings, database)
            )
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
            # The built-in simulator's port mappings answer on loopback.
            allow_private_probe_targets=settings.allow_private_probe_targets or built_in,
        )
        log.info("resources.closing")
