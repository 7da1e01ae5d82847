"""The reconciler's per-instance poll: keep each live row true to what Novita says (DESIGN §10).

One batch claims due rows (live, with a Novita id, `next_check_at` passed, claim free or
expired), reads each from Novita and applies the §16 mapping (`status_map`) through
`change_status`. Novita's reads are the truth; webhooks only make us look sooner.

- Next check: `poll_interval_transitional` while the status is transitional, else
  `reconcile_interval`; after a failed read, a per-instance exponential backoff.
- Not found: `deleted` if we were deleting, else `failed` with reason `lost`.
- An action we just asked for (start, stop, delete) wins over a read still showing the
  state before it, for `action_settle_seconds`; after that Novita's word stands, and a
  delete Novita still has not started is sent again (deletes are idempotent; a row must
  never stay `deleting` while its instance keeps billing).
- A read older than the newest observation already applied (e.g. a webhook that arrived
  while we were asking) is dropped, so the record never moves backwards.
- A move the transition table refuses is logged (`reconcile.transition_refused`) and
  nothing is recorded.
- While the circuit breaker is open the batch is skipped (`paused`, for /health).

`ready` is not decided here (the readiness probe is a later issue): `running` stays `running`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import claims
from service.db import repository as repo
from service.db.engine import Database
from service.domain import TRANSITIONAL_STATUSES, EventSource, Instance, Status
from service.novita import (
    BreakerState,
    NovitaCircuitOpenError,
    NovitaClient,
    NovitaError,
    NovitaNotFoundError,
)
from service.novita import Instance as ProviderInstance
from service.provisioning.status_map import (
    Observation,
    contradicts_action,
    map_provider_status,
    stored_provider_status,
    transition_path,
)
from service.resources import Resources, new_owner_id
from service.settings import Settings
from service.workers.loop import WorkerLoop

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    claim_ttl: float = 60.0
    batch_size: int = 50
    fast_interval: float = 5.0
    slow_interval: float = 30.0
    backoff_max: float = 300.0
    action_settle: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilerConfig:
        return cls(
            claim_ttl=settings.claim_ttl_seconds,
            batch_size=settings.reconciler_batch_size,
            fast_interval=settings.poll_interval_transitional,
            slow_interval=settings.reconcile_interval,
            backoff_max=settings.poll_error_max_backoff,
            action_settle=settings.action_settle_seconds,
        )


@dataclass(frozen=True, slots=True)
class _Outcome:
    resend_delete: bool = False


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
        self._failures: dict[str, int] = {}
        # When a read first contradicted an action we asked for (monotonic seconds).
        self._contradicted_since: dict[str, float] = {}

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
            observed = await self._novita.get_instance(instance.novita_instance_id)
        except NovitaNotFoundError:
            observed = None
        except NovitaCircuitOpenError:
            self._pause()
            return False
        except NovitaError as error:
            await self._back_off(instance, error)
            return True
        self._failures.pop(instance.id, None)
        try:
            outcome = await self._apply(instance.id, observed, asked_at)
        except Exception:
            log.exception("reconcile.apply_failed", instance_id=instance.id)
            await self._back_off(instance, None)
            return True
        if outcome.resend_delete:
            await self._resend_delete(instance.id, instance.novita_instance_id)
        return True

    async def _apply(
        self, instance_id: str, observed: ProviderInstance | None, asked_at: datetime
    ) -> _Outcome:
        now = self._clock.now()
        observation = _observation(observed)
        async with self._db.transaction() as conn:
            current = await repo.get_instance(conn, instance_id, for_update=True)
            if current.is_terminal:
                return _Outcome()
            if current.provider_observed_at is not None and current.provider_observed_at > asked_at:
                # Something newer (a webhook) was applied while we were asking: ours is stale.
                await claims.release(conn, instance_id, owner=self.owner)
                return _Outcome()
            decision = map_provider_status(current.status, observation)
            target = decision.target
            if target is None:
                log.warning(
                    "reconcile.unknown_provider_status",
                    instance_id=instance_id,
                    provider_status=observation.status,
                )
                target = current.status
            outcome = _Outcome()
            if contradicts_action(current.status, target):
                if self._within_settle(instance_id):
                    await self._schedule(conn, current, current.status, now)
                    return outcome
                if current.status is Status.DELETING:
                    outcome = _Outcome(resend_delete=True)
                    await self._schedule(conn, current, current.status, now)
                    return outcome
            self._contradicted_since.pop(instance_id, None)
            path = transition_path(current.status, target)
            if not path:
                log.warning(
                    "reconcile.transition_refused",
                    instance_id=instance_id,
                    status=current.status.value,
                    provider_status=observation.status,
                    target=target.value,
                )
                await self._schedule(conn, current, current.status, now)
                return outcome
            final = path[-1]
            changes: dict[str, Any] = {"port_mappings": _port_mappings(observed)}
            if final not in (Status.DELETED, Status.FAILED):
                changes["next_check_at"] = now + timedelta(seconds=self._interval(final))
            for step in path:
                result = await repo.change_status(
                    conn,
                    instance_id,
                    step,
                    source=EventSource.RECONCILER,
                    now=now,
                    reason=decision.reason if step is final else None,
                    provider_status=stored_provider_status(observation.status),
                    observed_at=asked_at,
                    detail=_detail(observed, observation),
                    changes=changes,
                )
                if result.event is not None:
                    log.info(
                        "reconcile.instance_repaired",
                        instance_id=instance_id,
                        from_status=result.event.from_status,
                        to_status=step.value,
                        provider_status=observation.status,
                        reason=result.event.reason,
                    )
            await claims.release(conn, instance_id, owner=self.owner)
        return outcome

    def _within_settle(self, instance_id: str) -> bool:
        first = self._contradicted_since.setdefault(instance_id, self._clock.monotonic())
        return self._clock.monotonic() - first < self.config.action_settle

    async def _schedule(
        self, conn: AsyncConnection, current: Instance, status: Status, now: datetime
    ) -> None:
        """Record nothing; just hand the row back, due at the pace its status calls for."""
        next_check = now + timedelta(seconds=self._interval(status))
        await claims.release(conn, current.id, owner=self.owner, next_check_at=next_check)

    def _interval(self, status: Status) -> float:
        if status in TRANSITIONAL_STATUSES:
            return self.config.fast_interval
        return self.config.slow_interval

    async def _resend_delete(self, instance_id: str, novita_id: str) -> None:
        try:
            await self._novita.delete_instance(novita_id)
        except NovitaNotFoundError:
            pass  # gone already: the next poll confirms it
        except NovitaError as error:
            log.warning("reconcile.delete_resend_failed", instance_id=instance_id, error=error.code)
            return
        self._contradicted_since.pop(instance_id, None)
        log.warning(
            "reconcile.delete_resent", instance_id=instance_id, novita_instance_id=novita_id
        )

    async def _back_off(self, instance: Instance, error: NovitaError | None) -> None:
        failures = self._failures.get(instance.id, 0) + 1
        self._failures[instance.id] = failures
        delay = min(self.config.backoff_max, self.config.fast_interval * 2 ** (failures - 1))
        if error is not None and error.retry_after:
            delay = max(delay, error.retry_after)
        log.info(
            "reconcile.poll_failed",
            instance_id=instance.id,
            error=error.code if error else None,
            retry_in=delay,
        )
        await self._release(instance, self._clock.now() + timedelta(seconds=delay))

    async def _release(self, instance: Instance, next_check_at: datetime | None) -> None:
        async with self._db.transaction() as conn:
            await claims.release(conn, instance.id, owner=self.owner, next_check_at=next_check_at)


def _observation(observed: ProviderInstance | None) -> Observation:
    if observed is None:
        return Observation(status=None)
    return Observation(
        status=observed.status,
        spot_status=observed.spot_status,
        has_status_error=observed.status_error is not None,
    )


def _port_mappings(observed: ProviderInstance | None) -> list[dict[str, Any]]:
    if observed is None:
        return []
    return [
        {"port": m.port, "type": m.type, "endpoint": m.endpoint} for m in observed.port_mappings
    ]


def _detail(observed: ProviderInstance | None, observation: Observation) -> dict[str, Any]:
    if observed is None:
        return {"notFound": True}
    detail: dict[str, Any] = {"providerStatus": observation.status}
    if observed.spot_status:
        detail["spotStatus"] = observed.spot_status
    if observed.status_error is not None:
        detail["statusError"] = {
            "state": observed.status_error.state,
            "message": observed.status_error.message,
        }
    return detail


def build_reconciler_loop(resources: Resources) -> WorkerLoop:
    return WorkerLoop(Reconciler.from_resources(resources), idle_interval=1.0)
