"""The reconciler's per-instance poll: keep each live row true to what Novita says
(docs/architecture.md).

One batch claims due rows (live, with a Novita id, `next_check_at` passed, claim free or
expired), reads each from Novita and applies the answer through `ObservationApplier`
(`service.workers.observe`, shared with the relist: the rules are written down there).
Novita's reads are the truth; webhooks only make us look sooner.

- Next check: while the status is transitional, as often as the call budget allows
  (`call_budget`: what urgent calls and the background leave, shared among the instances
  in transition, never sooner than `transitional_poll_floor`); else `reconcile_interval`,
  stretched so that stable instances' polls stay within `stable_poll_share` of the rate
  limit (`Pacing`); after a failed read, a per-instance exponential backoff counted on
  the row (`failed_attempts`), so a restart or another process keeps it.
- Transitional instances by listing: when one list call per page of the provider's
  instances is fewer calls than one read per transitional instance (a few pages, many
  instances in transition), a round lists them instead (TRANSITIONAL priority), applies
  what changed in one transaction (`ObservationApplier.apply_many`: readiness probes the
  rows it made `running` as soon as it commits), and pushes the seen rows' own polls back by two
  rounds. While
  listings go on, transitional rows are read one by one only right after a listing, and
  only those it did not see (a row created since the last listing waits for the next
  one instead of costing a read of its own); once listings stop (or fail), they soon are.
- Two loops share the work in `serve` and `worker` (`scope`): `transitions` polls (and
  lists) the instances in transition, `reconciler` the others, so a batch of stable polls
  waiting for the background's share of the rate limit never holds up a transitional
  read: the limiter serves the waiting calls of both by priority.
- Between batches, a pass with nothing due waits for the next poll or round due within
  `lookahead` seconds instead of a whole loop interval.
- While the circuit breaker is open the batch is skipped (`paused`, for /health).

The full relist (`relister.py`) and readiness probes (`readiness.py`) are workers of their
own, so a long sweep or a slow endpoint never delays polls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import structlog

from service.backoff import backoff_seconds
from service.clock import Clock
from service.db import claims, sweeps
from service.db.engine import Database
from service.domain import TRANSITIONAL_STATUSES, Instance
from service.novita import (
    BreakerState,
    NovitaCircuitOpenError,
    NovitaClient,
    NovitaError,
    NovitaNotFoundError,
)
from service.novita import Instance as ProviderInstance
from service.novita.limiter import Priority
from service.resources import Resources
from service.settings import Settings
from service.workers.call_budget import CallBudget, RateMeter
from service.workers.loop import Figures, WorkerLoop
from service.workers.observe import ObservationApplier, Pacing, differs

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    claim_ttl: float = 60.0
    batch_size: int = 50
    fast_interval: float = 5.0
    slow_interval: float = 30.0
    backoff_max: float = 300.0
    action_settle: float = 30.0
    stable_budget: float | None = None  # polls a minute of stable instances (None: no cap)
    # Pace transitional polls by the call budget (None: every `fast_interval`).
    budget: CallBudget | None = None
    lookahead: float = 1.0
    transitional_scan_limit: int = 5000
    # Which rows this loop polls: all, those in a transitional status, or the others.
    scope: Literal["all", "transitional", "stable"] = "all"

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilerConfig:
        return cls(
            claim_ttl=settings.claim_ttl_seconds,
            batch_size=settings.reconciler_batch_size,
            fast_interval=settings.poll_interval_transitional,
            slow_interval=settings.reconcile_interval,
            backoff_max=settings.poll_error_max_backoff,
            action_settle=settings.action_settle_seconds,
            stable_budget=settings.rate_limit_per_minute * settings.stable_poll_share,
            budget=CallBudget(
                per_minute=settings.rate_limit_per_minute,
                stable_share=settings.stable_poll_share,
                floor=settings.transitional_poll_floor,
                slow_interval=settings.reconcile_interval,
                relist_interval=settings.relist_interval,
            ),
        )

    @property
    def pacing(self) -> Pacing:
        return Pacing(
            self.fast_interval, self.slow_interval, self.action_settle, self.stable_budget
        )


class Reconciler:

    def __init__(
        self,
        *,
        database: Database,
        novita: NovitaClient,
        clock: Clock,
        owner: str,
        config: ReconcilerConfig | None = None,
    ) -> None:
        if not owner:
            raise ValueError("a reconciler needs an owner id for its claims")
        self._db = database
        self._novita = novita
        self._clock = clock
        self.owner = owner
        self.config = config or ReconcilerConfig()
        self.name = "transitions" if self.config.scope == "transitional" else "reconciler"
        self.paused = False  # True while the breaker is open: shown by /health
        self.applier = ObservationApplier(
            database=database, novita=novita, clock=clock, owner=owner, pacing=self.config.pacing
        )
        # The transitional pace (read by /health and the benchmarks).
        self.transitional = 0  # instances in transition, at the last pass
        self.by_listing = False  # watched by listing rather than one read each
        self.round_interval: float | None = None  # seconds between rounds of reads
        self.listings = 0
        self._listed = 0  # provider instances in the last listing
        self._next_listing = 0.0  # monotonic
        self._urgent = RateMeter()

    @classmethod
    def from_resources(
        cls, resources: Resources, scope: Literal["all", "transitional", "stable"] = "all"
    ) -> Reconciler:
        return cls(
            database=resources.database,
            novita=resources.novita,
            clock=resources.clock,
            owner=resources.owner,
            config=replace(ReconcilerConfig.from_settings(resources.settings), scope=scope),
        )

    def figures(self, now: datetime) -> Figures:
        figures: Figures = {
            "paused": self.paused,
            "byListing": self.by_listing,
            "transitional": self.transitional,
            "listings": self.listings,
        }
        if self.round_interval is not None:
            figures["roundInterval"] = self.round_interval
        return figures

    @property
    def _only_transitional(self) -> bool | None:
        """The claim filter of this loop's scope."""
        return {"all": None, "transitional": True, "stable": False}[self.config.scope]

    async def run_once(self) -> int:
        done = await self._pass()
        if done or self.config.budget is None or self.paused:
            return done
        wait = await self._seconds_to_next_due()
        if wait is None or wait > self.config.lookahead:
            return 0
        await asyncio.sleep(max(wait, 0.0))
        return await self._pass()

    async def _pass(self) -> int:
        if self._novita.breaker.state is BreakerState.OPEN:
            self._pause()
            return 0
        if self.paused:
            log.info("reconcile.resumed")
            self.paused = False
        listed: int | None = None
        if self.config.budget is not None:
            listed = await self._pace(self.config.budget)
        scope = self._claim_scope(listing_done=listed is not None)
        if scope == "none":
            return 0
        async with self._db.transaction() as conn:
            claimed = await claims.claim_due_for_poll(
                conn,
                owner=self.owner,
                now=self._clock.now(),
                ttl=self.config.claim_ttl,
                limit=self.config.batch_size,
                transitional=scope,
            )
        for index, instance in enumerate(claimed):
            if not await self._poll(instance):
                # The breaker opened mid-batch: hand the rest back untouched, still due.
                for rest in claimed[index:]:
                    await self._release(rest, None)
                break
        return len(claimed) + (listed or 0)

    def _claim_scope(self, *, listing_done: bool) -> bool | Literal["none"] | None:
        """Which due rows this pass reads one by one: `claims.claim_due_for_poll`'s filter
        (True: transitional, False: the others, None: all), or "none". While listings
        watch the transitional rows, those are read one by one only in the pass of a
        listing, after it (the rows it did not see)."""
        if not self._listings_watch or listing_done:
            return self._only_transitional
        return "none" if self.config.scope == "transitional" else False

    @property
    def _listings_watch(self) -> bool:
        return self.by_listing and self.config.scope != "stable"

    # -- pacing by the call budget ----------------------------------------------------------

    async def _pace(self, budget: CallBudget) -> int | None:
        """Set the transitional pace from the budget; list the transitional instances when
        that is the cheaper round and one is due. Returns the rows a listing looked at
        (None: no listing this pass)."""
        await self.applier.recount()
        async with self._db.read() as conn:
            moving = await sweeps.transitional_instances(
                conn, limit=self.config.transitional_scan_limit
            )
        now = self._clock.monotonic()
        stable = self.applier.pacing.stable_count
        listed = max(self._listed, stable + len(moving))
        urgent = self._urgent.per_minute(
            now, self._novita.limiter.granted_by_priority[Priority.URGENT]
        )
        left = budget.transitional_budget(urgent, budget.background_demand(stable, listed))
        pages = budget.pages(listed)
        one_by_one = budget.round_interval(max(len(moving), 1), left)
        self.transitional = len(moving)
        self.by_listing = len(moving) > pages
        self.round_interval = budget.round_interval(pages, left) if self.by_listing else one_by_one
        # While listings watch them, a transitional row's own poll waits two rounds.
        own_poll = 2 * self.round_interval if self.by_listing else one_by_one
        pacing = replace(
            self.applier.pacing,
            transitional_interval=own_poll,
            stable_budget=budget.stable_budget(listed),
        )
        if pacing != self.applier.pacing:
            self.applier.pacing = pacing
        if not self._listings_watch or now < self._next_listing:
            return None
        self._next_listing = now + self.round_interval
        return await self._list_round(moving, budget, own_poll)

    async def _list_round(self, moving: list[Instance], budget: CallBudget, wait: float) -> int:
        """One listing: apply what changed for the transitional rows; push back their polls."""
        asked_at = self._clock.now()
        try:
            items = [
                item
                async for item in self._novita.iter_instances(
                    page_size=budget.page_size, priority=Priority.TRANSITIONAL
                )
            ]
        except NovitaCircuitOpenError:
            self._pause()
            return 0
        except NovitaError as error:
            log.info("reconcile.listing_failed", error=error.code)
            return 0
        rows = {i.novita_instance_id: i for i in moving}
        if any(item.id not in rows for item in items):
            # Rows that became transitional (e.g. were created) while the listing ran.
            async with self._db.read() as conn:
                fresh = await sweeps.transitional_instances(
                    conn, limit=self.config.transitional_scan_limit
                )
            rows.update((i.novita_instance_id, i) for i in fresh if i.novita_instance_id)
        watched = [(rows[item.id], item) for item in items if item.id in rows]
        seen = [row.id for row, _item in watched]
        # Every change this listing brings in one transaction: the rows it makes `running`
        # reach readiness together, without one commit each.
        await self.applier.apply_many(
            [(row.id, item) for row, item in watched if differs(row, item)], asked_at
        )
        self._listed = len(items)
        self.listings += 1
        now = self._clock.now()
        async with self._db.transaction() as conn:
            await sweeps.postpone_polls(
                conn, seen, until=now + timedelta(seconds=wait), now=now
            )
        return len(seen)

    async def _seconds_to_next_due(self) -> float | None:
        scope = self._claim_scope(listing_done=False)
        soonest = None
        if scope != "none":
            async with self._db.read() as conn:
                soonest = await sweeps.soonest_poll(conn, transitional=scope)
        waits = []
        if soonest is not None:
            waits.append((soonest - self._clock.now()).total_seconds())
        if self._listings_watch:
            waits.append(self._next_listing - self._clock.monotonic())
        return min(waits) if waits else None

    def _pause(self) -> None:
        if not self.paused:
            log.warning("reconcile.paused", reason="novita circuit open")
        self.paused = True

    # -- one instance ---------------------------------------------------------------------

    async def _poll(self, instance: Instance) -> bool:
        """Read and apply one instance; False if Novita calls are suspended."""
        assert instance.novita_instance_id is not None
        asked_at = self._clock.now()
        observed: ProviderInstance | None
        try:
            observed = await self._novita.get_instance(
                instance.novita_instance_id, priority=poll_priority(instance)
            )
        except NovitaNotFoundError:
            observed = None
        except NovitaCircuitOpenError:
            self._pause()
            return False
        except NovitaError as error:
            await self._back_off(instance, error)
            return True
        try:
            outcome = await self.applier.apply(instance.id, observed, asked_at, release_claim=True)
        except Exception:
            log.exception("reconcile.apply_failed", instance_id=instance.id)
            await self._back_off(instance, None)
            return True
        if outcome.resend_delete:
            await self.applier.resend_delete(instance.id, instance.novita_instance_id)
        return True

    async def _back_off(self, instance: Instance, error: NovitaError | None) -> None:
        failures = instance.failed_attempts + 1
        delay = backoff_seconds(
            failures,
            base=self.config.fast_interval,
            cap=self.config.backoff_max,
            retry_after=error.retry_after if error is not None else None,
        )
        log.info(
            "reconcile.poll_failed",
            instance_id=instance.id,
            error=error.code if error else None,
            retry_in=delay,
        )
        await self._release(
            instance, self._clock.now() + timedelta(seconds=delay), failed_attempts=failures
        )

    async def _release(
        self,
        instance: Instance,
        next_check_at: datetime | None,
        *,
        failed_attempts: int | None = None,
    ) -> None:
        async with self._db.transaction() as conn:
            await claims.release(
                conn,
                instance.id,
                owner=self.owner,
                next_check_at=next_check_at,
                failed_attempts=failed_attempts,
            )


def poll_priority(instance: Instance) -> Priority:
    """A poll of an instance in transition comes before stable ones and the relist."""
    if instance.status in TRANSITIONAL_STATUSES:
        return Priority.TRANSITIONAL
    return Priority.BACKGROUND


def build_reconciler_loop(resources: Resources) -> WorkerLoop:
    """The polls of instances not in transition."""
    return WorkerLoop(Reconciler.from_resources(resources, "stable"), idle_interval=1.0)


def build_transitions_loop(resources: Resources) -> WorkerLoop:
    """The reads (and listings) of instances in transition."""
    return WorkerLoop(Reconciler.from_resources(resources, "transitional"), idle_interval=1.0)
