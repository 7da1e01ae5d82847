"""The reconciler's per-instance poll: keep each live row true to what Novita says
(docs/architecture.md).

One batch claims due rows (live, with a Novita id, `next_check_at` passed, claim free or
expired), reads each from Novita and applies the answer through `ObservationApplier`
(`service.workers.observe`, shared with the relist: the rules are written down there).
Novita's reads are the truth; webhooks only make us look sooner.

- Next check: `poll_interval_transitional` while the status is transitional, else
  `reconcile_interval`, stretched so that stable instances' polls stay within
  `stable_poll_share` of the rate limit (`Pacing`); after a failed read, a per-instance
  exponential backoff counted on the row (`failed_attempts`), so a restart or another
  process keeps it.
- While the circuit breaker is open the batch is skipped (`paused`, for /health).

The full relist (`relister.py`) and readiness probes (`readiness.py`) are workers of their
own, so a long sweep or a slow endpoint never delays polls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from service.backoff import backoff_seconds
from service.clock import Clock
from service.db import claims
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
from service.resources import Resources, new_owner_id
from service.settings import Settings
from service.workers.loop import WorkerLoop
from service.workers.observe import ObservationApplier, Pacing

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
        )

    @property
    def pacing(self) -> Pacing:
        return Pacing(
            self.fast_interval, self.slow_interval, self.action_settle, self.stable_budget
        )


class Reconciler:
    name = "reconciler"

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
        self.paused = False  # True while the breaker is open: shown by /health
        self.applier = ObservationApplier(
            database=database, novita=novita, clock=clock, owner=owner, pacing=self.config.pacing
        )

    @classmethod
    def from_resources(cls, resources: Resources) -> Reconciler:
        return cls(
            database=resources.database,
            novita=resources.novita,
            clock=resources.clock,
            # Resources built by hand (tests) may have no owner: claims still need one.
            owner=resources.owner or new_owner_id(),
            config=ReconcilerConfig.from_settings(resources.settings),
        )

    async def run_once(self) -> int:
        if self._novita.breaker.state is BreakerState.OPEN:
            self._pause()
            return 0
        if self.paused:
            log.info("reconcile.resumed")
            self.paused = False
        async with self._db.transaction() as conn:
            claimed = await claims.claim_due_for_poll(
                conn,
                owner=self.owner,
                now=self._clock.now(),
                ttl=self.config.claim_ttl,
                limit=self.config.batch_size,
            )
        for index, instance in enumerate(claimed):
            if not await self._poll(instance):
                # The breaker opened mid-batch: hand the rest back untouched, still due.
                for rest in claimed[index:]:
                    await self._release(rest, None)
                break
        return len(claimed)

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
    return WorkerLoop(Reconciler.from_resources(resources), idle_interval=1.0)
