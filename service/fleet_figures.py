"""The database figures `/health` and `/metrics` show, kept fresh by one background task.

Both are unauthenticated and polled often; counting instances and notifications by
status (GROUP BYs over tables that grow) on every call would let anyone put load on the
database. Instead this keeper reads them every `interval` seconds and both answer from
the last reading: its counts are at most that old (`checks.database.figuresAgeSeconds`
says how old), and the database counts as down when the last reading failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from service.clock import Clock
from service.db.engine import Database
from service.db.health_counts import ServiceCounts, Stuck, service_counts, stuck_instances
from service.db.status_ages import oldest_entry_by_status

log = structlog.get_logger(__name__)

# Seconds between readings: how stale /health's counts may be.
DEFAULT_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class FleetReading:
    """One reading; `counts` is None when the database did not answer."""

    taken_at: datetime
    counts: ServiceCounts | None
    stuck: dict[str, Stuck]
    # When the longest-waiting instance entered each transitional status it is in.
    entered: dict[str, datetime]

    @property
    def database_up(self) -> bool:
        return self.counts is not None


class FleetFigures:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        stuck_after_seconds: float,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._database = database
        self._clock = clock
        self._stuck_after_seconds = stuck_after_seconds
        self.interval = interval
        self.latest: FleetReading | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def refresh(self) -> FleetReading:
        """Read the figures now (a failure is a reading too: the database is down)."""
        now = self._clock.now()
        try:
            async with self._database.read() as conn:
                counts: ServiceCounts | None = await service_counts(conn)
                stuck = await stuck_instances(conn, now, self._stuck_after_seconds)
                entered = await oldest_entry_by_status(conn)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("fleet_figures.database_unreachable", error=type(exc).__name__)
            counts, stuck, entered = None, {}, {}
        self.latest = FleetReading(now, counts, stuck, entered)
        return self.latest

    async def start(self) -> None:
        """Take the first reading, then keep reading in the background until `stop()`."""
        await self.refresh()
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                try:
                    await self.refresh()
                except Exception:  # a bug: log it, keep the last reading, try again later
                    log.exception("fleet_figures.refresh_failed")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
