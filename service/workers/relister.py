"""The full relist: every `relist_interval`, read every provider instance and set our records
straight (docs/architecture.md). Per-instance polls and webhooks can both miss things; this cannot.

One sweep pages through `GET /gpu/instances` (⌈N / page size⌉ calls) and, per instance:

- its name carries one of our ids and we have that row → if anything recorded differs,
  apply the read through the same `ObservationApplier` as the poll (same rules);
- it carries our id but there is no row → adopt it (`adopter.py`: a row under that id);
- it carries none of our ids → someone else's: counted and logged
  (`reconcile.foreign_instance`, once per instance while it is among the
  `foreign_remembered` most recently seen), never touched.

After a complete listing, our live rows with a Novita id that the list did not contain
(and were submitted before the sweep began, so a create landing meanwhile is not missed)
are read one by one before anything is concluded (an instance can slip between pages
while the list shifts): not found → `deleted` if we were deleting, else `failed`/`lost`.
A listing that fails part-way concludes nothing about absent instances.

The pages of a sweep are spread over `spread` of the interval (from the number of pages
the last sweep read; the first sweep of a process counts our rows), not read in one
burst: each page is then read once per interval all the same, and the list calls,
BACKGROUND in the limiter, leave room for everything more urgent at every moment of the
sweep.

Only one process sweeps at a time: the `relist` lease (`service.db.leases`), renewed at
each sweep and during long ones. While the breaker is open nothing is asked (`paused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from service.clock import Clock
from service.db import leases, sweeps
from service.db.engine import Database
from service.domain import Instance, Status
from service.novita import (
    BreakerState,
    NovitaCircuitOpenError,
    NovitaClient,
    NovitaError,
    NovitaNotFoundError,
)
from service.novita import Instance as ProviderInstance
from service.novita.limiter import Priority
from service.provisioning.naming import instance_id_from_provider_name
from service.resources import Resources
from service.settings import Settings
from service.workers.adopter import adopt
from service.workers.call_budget import RELIST_SPREAD
from service.workers.first_sightings import FirstSightings
from service.workers.loop import Figures, WorkerLoop, age_seconds
from service.workers.observe import ObservationApplier, Pacing, differs
from service.workers.reconciler import ReconcilerConfig

log = structlog.get_logger(__name__)

LEASE_NAME = "relist"


# A leader whose last good sweep is older than this many intervals is overdue (/health).
OVERDUE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class RelistConfig:
    interval: float = 300.0
    page_size: int = 100  # Novita's list is cheap per call; fewer calls spare the rate limit
    retry_after_failure: float = 60.0
    spread: float = 0.0  # share of the interval a sweep's pages are spread over (0: burst)
    # Foreign instances remembered as logged (~170 bytes each: 1.7 MB at most). With more
    # than this many on the account, some are logged again each sweep: noise, not growth.
    foreign_remembered: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> RelistConfig:
        return cls(
            interval=settings.relist_interval,
            retry_after_failure=min(60.0, settings.relist_interval),
            spread=RELIST_SPREAD,
        )

    @property
    def lease_ttl(self) -> float:
        # Longer than the interval, so the leader keeps the lease from sweep to sweep;
        # a dead leader's lease passes on within two intervals.
        return max(2 * self.interval, 60.0)


@dataclass(slots=True)
class SweepTally:
    """What one sweep counted, and the Novita ids it listed."""

    listed: int = 0
    foreign: int = 0
    repaired: int = 0
    adopted: int = 0
    lost: int = 0
    duplicates: int = 0
    errors: int = 0
    listed_ids: set[str] = field(default_factory=set)  # Novita ids


class _LeaseLost(Exception):
    """Another process holds the relist lease now: stop sweeping."""


class _Interrupted(Exception):
    """The process is stopping: the sweep ends between two pages, concluding nothing."""


class Relister:
    name = "relister"

    def __init__(
        self,
        *,
        database: Database,
        novita: NovitaClient,
        clock: Clock,
        owner: str,
        config: RelistConfig | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        if not owner:
            raise ValueError("a relister needs an owner id for its lease")
        self._db = database
        self._novita = novita
        self._clock = clock
        self.owner = owner
        self.config = config or RelistConfig()
        self.applier = ObservationApplier(
            database=database, novita=novita, clock=clock, owner=owner, pacing=pacing
        )
        # Read by /health and /metrics.
        self.paused = False  # the breaker is open: no sweep
        self.is_leader = False  # this process held the relist lease at its last attempt
        self.last_relist_at: datetime | None = None  # start of the newest sweep
        self.last_successful_sweep_at: datetime | None = None  # end of the newest complete one
        self.last_sweep_seconds: float | None = None
        self.foreign_instances = 0  # provider instances without our id, at the last sweep
        self.sweeps = 0
        self.failed_sweeps = 0
        self.adopted_total = 0
        self.lost_total = 0
        self.repaired_total = 0
        self._next_attempt: float | None = None  # monotonic; None: at once
        self._renewed_at = 0.0
        self._reported_foreign = FirstSightings(self.config.foreign_remembered)
        self._last_listed = 0  # provider instances the last complete sweep listed
        self._interrupted = asyncio.Event()  # set by `interrupt`: the process is stopping

    @classmethod
    def from_resources(cls, resources: Resources) -> Relister:
        settings = resources.settings
        return cls(
            database=resources.database,
            novita=resources.novita,
            clock=resources.clock,
            owner=resources.owner,
            config=RelistConfig.from_settings(settings),
            pacing=ReconcilerConfig.from_settings(settings).pacing,
        )

    def figures(self, now: datetime) -> Figures:
        figures: Figures = {
            "paused": self.paused,
            "isLeader": self.is_leader,
            "sweeps": self.sweeps,
            "failedSweeps": self.failed_sweeps,
            "adoptedTotal": self.adopted_total,
            "lostTotal": self.lost_total,
            "repairedTotal": self.repaired_total,
            "foreignInstances": self.foreign_instances,
        }
        if self.last_sweep_seconds is not None:
            figures["lastSweepSeconds"] = self.last_sweep_seconds
        figures["lastRelistAgeSeconds"] = age_seconds(now, self.last_relist_at)
        last_good = self.last_successful_sweep_at
        figures["lastSuccessfulSweepAgeSeconds"] = age_seconds(now, last_good)
        if self.is_leader:
            stale = (
                last_good is None
                or (now - last_good).total_seconds() > OVERDUE_INTERVALS * self.config.interval
            )
            figures["overdue"] = bool(stale and self.sweeps)
        return figures

    def interrupt(self) -> None:
        """End a sweep in progress at its next page (its loop's `on_stop`): a paced sweep
        lasts most of `RELIST_INTERVAL`, and would otherwise hold a shutdown for the whole
        grace period before being cancelled. A sweep cut short concludes nothing lost."""
        self._interrupted.set()

    async def run_once(self) -> int:
        if self._novita.breaker.state is BreakerState.OPEN:
            self._pause()
            return 0
        if self.paused:
            log.info("reconcile.relist_resumed")
            self.paused = False
        started = self._clock.monotonic()
        if self._next_attempt is not None and started < self._next_attempt:
            return 0
        self._next_attempt = started + self.config.interval
        if not await self._lead():
            return 0
        try:
            tally = await self.sweep()
        except NovitaCircuitOpenError:
            self._pause()
            self._next_attempt = None  # sweep as soon as the breaker lets us
            return 0
        except NovitaError as error:
            self.failed_sweeps += 1
            self._next_attempt = started + self.config.retry_after_failure
            log.warning("reconcile.relist_failed", error=error.code)
            return 0
        except _LeaseLost:
            log.warning("reconcile.lease_lost", lease=LEASE_NAME)
            return 0
        except _Interrupted:
            log.info("reconcile.relist_interrupted")
            return 0
        except Exception:
            # A bug or a database failure: the loop logs it; try again sooner than a full
            # interval, since nothing was concluded.
            self.failed_sweeps += 1
            self._next_attempt = started + self.config.retry_after_failure
            raise
        return tally.listed

    def _pause(self) -> None:
        if not self.paused:
            log.warning("reconcile.relist_paused", reason="novita circuit open")
        self.paused = True

    async def _lead(self) -> bool:
        async with self._db.transaction() as conn:
            leading = await leases.try_acquire(
                conn, LEASE_NAME, self.owner, self._clock.now(), self.config.lease_ttl
            )
        if leading != self.is_leader:
            log.info("reconcile.leadership_changed", leader=leading, owner=self.owner)
        self.is_leader = leading
        self._renewed_at = self._clock.monotonic()
        return leading

    async def _renew_if_due(self) -> None:
        if self._clock.monotonic() - self._renewed_at >= self.config.lease_ttl / 3:
            if not await self._lead():
                raise _LeaseLost

    # -- one sweep ------------------------------------------------------------------------

    async def sweep(self) -> SweepTally:
        """List every provider instance and repair, adopt or conclude lost; needs the lease."""
        started_at = self._clock.now()
        started = self._clock.monotonic()
        self.last_relist_at = started_at
        tally = SweepTally()
        # A chunk of `page_size` items can hold the tail of the page before it (the client
        # drops repeats), so its items were read no earlier than the previous chunk began.
        marks = (started_at, started_at)
        chunk: list[ProviderInstance] = []
        spacing = await self._page_spacing()
        page = 0
        pages = self._novita.iter_instances(
            page_size=self.config.page_size, priority=Priority.BACKGROUND
        )
        async for item in pages:
            chunk.append(item)
            if len(chunk) >= self.config.page_size:
                await self._handle_chunk(chunk, marks[0], tally)
                chunk = []
                await self._renew_if_due()
                page += 1
                if spacing:
                    ahead = started + page * spacing - self._clock.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._interrupted.wait(), timeout=min(max(ahead, 0.0), spacing)
                        )
                if self._interrupted.is_set():
                    raise _Interrupted
                marks = (marks[1], self._clock.now())
        if chunk:
            await self._handle_chunk(chunk, marks[0], tally)
        await self._conclude_missing(started_at, tally)
        self._finish(tally, started)
        return tally

    async def _page_spacing(self) -> float:
        """Seconds between two pages of this sweep (0: no pacing), from the instances the
        last sweep listed, or for the first one, from our rows Novita knows."""
        if not self.config.spread:
            return 0.0
        expected = self._last_listed
        if not self.sweeps:
            async with self._db.read() as conn:
                expected = max(expected, await sweeps.count_live_provider_rows(conn))
        pages = math.ceil(expected / self.config.page_size)
        if pages <= 1:
            return 0.0
        return self.config.interval * self.config.spread / pages

    def _finish(self, tally: SweepTally, started: float) -> None:
        self.sweeps += 1
        self._last_listed = tally.listed
        self.foreign_instances = tally.foreign
        self.adopted_total += tally.adopted
        self.lost_total += tally.lost
        self.repaired_total += tally.repaired
        self.last_sweep_seconds = self._clock.monotonic() - started
        self.last_successful_sweep_at = self._clock.now()
        log.info(
            "reconcile.relist_finished",
            listed=tally.listed,
            repaired=tally.repaired,
            adopted=tally.adopted,
            lost=tally.lost,
            foreign=tally.foreign,
            duplicates=tally.duplicates,
            errors=tally.errors,
            seconds=round(self.last_sweep_seconds, 3),
        )

    async def _handle_chunk(
        self, chunk: list[ProviderInstance], asked_at: datetime, tally: SweepTally
    ) -> None:
        ours: list[tuple[str, ProviderInstance]] = []
        for item in chunk:
            tally.listed += 1
            tally.listed_ids.add(item.id)
            our_id = instance_id_from_provider_name(item.name)
            if our_id is None:
                tally.foreign += 1
                self._report_foreign(item)
            else:
                ours.append((our_id, item))
        async with self._db.read() as conn:
            rows = await sweeps.instances_by_id(conn, [our_id for our_id, _ in ours])
        for our_id, item in ours:
            try:
                await self._reconcile_one(our_id, rows.get(our_id), item, asked_at, tally)
            except Exception:  # one bad instance must not end the sweep
                tally.errors += 1
                log.exception("reconcile.relist_instance_failed", instance_id=our_id)

    def _report_foreign(self, item: ProviderInstance) -> None:
        if not self._reported_foreign.first(item.id):
            return
        log.info(
            "reconcile.foreign_instance",
            novita_instance_id=item.id,
            provider_status=item.status,
            note="not ours: reported, never stopped or deleted",
        )

    async def _reconcile_one(
        self,
        our_id: str,
        row: Instance | None,
        item: ProviderInstance,
        asked_at: datetime,
        tally: SweepTally,
    ) -> None:
        if row is None:
            if await adopt(self._db, self._clock, our_id, item, asked_at):
                tally.adopted += 1
            return
        if row.novita_instance_id != item.id:
            if row.novita_instance_id is not None:
                # A second instance under one of our ids: only a bug makes one. Say so loudly;
                # deleting it is left to a person (it may be the one someone relies on).
                tally.duplicates += 1
                log.error(
                    "reconcile.duplicate_instance",
                    instance_id=our_id,
                    novita_instance_id=item.id,
                    recorded_novita_instance_id=row.novita_instance_id,
                )
            # No Novita id yet: a create in flight, which the provisioner resolves by name.
            return
        if row.is_terminal or not differs(row, item):
            return
        outcome = await self.applier.apply(row.id, item, asked_at, release_claim=False)
        tally.repaired += outcome.changed
        if outcome.resend_delete:
            await self.applier.resend_delete(row.id, item.id)

    async def _conclude_missing(self, started_at: datetime, tally: SweepTally) -> None:
        async with self._db.read() as conn:
            live = await sweeps.live_provider_ids(conn, submitted_before=started_at)
        for novita_id, instance_id in live.items():
            if novita_id in tally.listed_ids:
                continue
            # Absent from the list; read it before concluding anything.
            asked_at = self._clock.now()
            observed: ProviderInstance | None
            try:
                observed = await self._novita.get_instance(novita_id, priority=Priority.BACKGROUND)
            except NovitaNotFoundError:
                observed = None
            except NovitaCircuitOpenError:
                raise
            except NovitaError as error:
                tally.errors += 1
                log.info("reconcile.relist_read_failed", instance_id=instance_id, error=error.code)
                continue
            try:
                outcome = await self.applier.apply(
                    instance_id, observed, asked_at, release_claim=False
                )
            except Exception:
                tally.errors += 1
                log.exception("reconcile.relist_instance_failed", instance_id=instance_id)
                continue
            if observed is None and outcome.status is Status.FAILED:
                tally.lost += 1
                log.warning(
                    "reconcile.instance_lost",
                    instance_id=instance_id,
                    novita_instance_id=novita_id,
                )
            elif outcome.changed:
                tally.repaired += 1
            if outcome.resend_delete:
                await self.applier.resend_delete(instance_id, novita_id)


def build_relister_loop(resources: Resources) -> WorkerLoop:
    # The loop only wakes to see whether a sweep is due; the sweep itself is paced above.
    relister = Relister.from_resources(resources)
    return WorkerLoop(relister, idle_interval=5.0, on_stop=relister.interrupt)
