"""Applying one read of Novita to one instance: shared by the per-instance poll and the relist.

Both read the provider and must reach the same verdict for the same answer, so the rules
live here once (docs/architecture.md, docs/novita-facts.md):

- the §16 mapping (`status_map`) decides the target; unrecognised statuses keep the row;
- not found: `deleted` if we were deleting, else `failed` with reason `lost`;
- a read older than the newest observation already applied (e.g. a webhook applied while
  we were asking) is dropped, so the record never moves backwards; observation times are
  bounded by the present (a read is dated no later than now, and a recorded time in the
  future, from before times were bounded, is ignored), so nothing can look newer than
  every read to come;
- an action we just asked for (start, stop, delete) wins over a read still showing the
  state before it, for `action_settle` seconds; after that Novita's word stands, and a
  delete Novita still has not started is sent again (deletes are idempotent);
- a move the transition table refuses is logged (`reconcile.transition_refused`), not
  recorded;
- next check: `fast_interval` while transitional, else the stable pace (`Pacing`):
  `slow_interval`, stretched when the instances polled at it would take more than their
  share of the Novita rate limit.

A poll holds a claim on the row and hands it back here (`release_claim=True`); the relist
holds none and leaves claims alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import claims
from service.db import repository as repo
from service.db.engine import Database
from service.domain import TRANSITIONAL_STATUSES, EventSource, Instance, Status
from service.novita import Instance as ProviderInstance
from service.novita import NovitaClient, NovitaError, NovitaNotFoundError
from service.provisioning.status_map import (
    Observation,
    contradicts_action,
    map_provider_status,
    stored_provider_status,
    transition_path,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    changed: bool = False  # an event was recorded
    status: Status | None = None  # the status recorded, when changed
    resend_delete: bool = False  # Novita never started our delete: send it again


@dataclass(frozen=True, slots=True)
class Pacing:
    """When an instance is looked at next. Transitional: every `fast_interval`. Stable:
    every `slow_interval`, or less often when that many polls would take more than
    `stable_budget` Novita calls a minute (a share of the rate limit): with thousands of
    instances their polls are spread out, and the relist (one list call per page) keeps
    seeing every one of them every RELIST_INTERVAL."""

    fast_interval: float = 5.0
    slow_interval: float = 30.0
    action_settle: float = 30.0
    stable_budget: float | None = None  # polls a minute for stable instances; None: no cap
    stable_count: int = 0  # how many instances are polled at the stable pace

    def interval(self, status: Status) -> float:
        if status in TRANSITIONAL_STATUSES:
            return self.fast_interval
        return self.stable_interval

    @property
    def stable_interval(self) -> float:
        if not self.stable_budget:
            return self.slow_interval
        return max(self.slow_interval, self.stable_count * 60.0 / self.stable_budget)


# How often an applier recounts the instances polled at the stable pace.
RECOUNT_SECONDS = 60.0


class ObservationApplier:
    def __init__(
        self,
        *,
        database: Database,
        novita: NovitaClient,
        clock: Clock,
        owner: str,
        pacing: Pacing | None = None,
    ) -> None:
        self._db = database
        self._novita = novita
        self._clock = clock
        self.owner = owner
        self.pacing = pacing or Pacing()
        self._counted_at: float | None = None  # monotonic time of the last recount
        # When a read first contradicted an action we asked for (monotonic seconds).
        self._contradicted_since: dict[str, float] = {}

    async def _recount(self) -> None:
        """Refresh the number the stable pace depends on, at most once a minute."""
        if not self.pacing.stable_budget:
            return
        now = self._clock.monotonic()
        if self._counted_at is not None and now - self._counted_at < RECOUNT_SECONDS:
            return
        async with self._db.read() as conn:
            count = await claims.count_polled_slowly(conn)
        self._counted_at = now
        if count != self.pacing.stable_count:
            self.pacing = replace(self.pacing, stable_count=count)

    async def apply(
        self,
        instance_id: str,
        observed: ProviderInstance | None,
        asked_at: datetime,
        *,
        release_claim: bool,
    ) -> ApplyOutcome:
        """Apply what Novita said (`None`: it has no such instance) when asked at `asked_at`."""
        await self._recount()
        now = self._clock.now()
        asked_at = min(asked_at, now)
        observation = observation_of(observed)
        async with self._db.transaction() as conn:
            current = await repo.get_instance(conn, instance_id, for_update=True)
            if current.is_terminal:
                return ApplyOutcome()
            newest = current.provider_observed_at
            # A future time (recorded before times were bounded) is no observation.
            if newest is not None and asked_at < newest <= self._clock.now():
                # Something newer (a webhook) was applied while we were asking: ours is stale.
                await self._hand_back(conn, current, None, release_claim)
                return ApplyOutcome()
            decision = map_provider_status(current.status, observation)
            target = decision.target
            if target is None:
                log.warning(
                    "reconcile.unknown_provider_status",
                    instance_id=instance_id,
                    provider_status=observation.status,
                )
                target = current.status
            if contradicts_action(current.status, target):
                if self._within_settle(instance_id):
                    await self._hand_back(conn, current, now, release_claim)
                    return ApplyOutcome()
                if current.status is Status.DELETING:
                    await self._hand_back(conn, current, now, release_claim)
                    return ApplyOutcome(resend_delete=True)
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
                await self._hand_back(conn, current, now, release_claim)
                return ApplyOutcome()
            changed = await self._record(
                conn, current, path, observed, observation, asked_at, decision.reason
            )
            if release_claim:
                await claims.release(conn, instance_id, owner=self.owner)
        return ApplyOutcome(changed=changed, status=path[-1] if changed else None)

    async def _record(
        self,
        conn: AsyncConnection,
        current: Instance,
        path: tuple[Status, ...],
        observed: ProviderInstance | None,
        observation: Observation,
        asked_at: datetime,
        reason: str | None,
    ) -> bool:
        now = self._clock.now()
        final = path[-1]
        changes: dict[str, Any] = {"port_mappings": merged_port_mappings(current, observed)}
        if final not in (Status.DELETED, Status.FAILED):
            changes["next_check_at"] = now + timedelta(seconds=self.pacing.interval(final))
        changed = False
        for step in path:
            result = await repo.change_status(
                conn,
                current.id,
                step,
                source=EventSource.RECONCILER,
                now=now,
                reason=reason if step is final else None,
                provider_status=stored_provider_status(observation.status),
                observed_at=asked_at,
                detail=observation_detail(observed, observation),
                changes=changes,
            )
            if result.event is not None:
                changed = True
                log.info(
                    "reconcile.instance_repaired",
                    instance_id=current.id,
                    from_status=result.event.from_status,
                    to_status=step.value,
                    provider_status=observation.status,
                    reason=result.event.reason,
                )
        return changed

    def _within_settle(self, instance_id: str) -> bool:
        first = self._contradicted_since.setdefault(instance_id, self._clock.monotonic())
        return self._clock.monotonic() - first < self.pacing.action_settle

    async def _hand_back(
        self,
        conn: AsyncConnection,
        current: Instance,
        now: datetime | None,
        release_claim: bool,
    ) -> None:
        """Record nothing; a poll's claim goes back, due at the pace its status calls for."""
        if not release_claim:
            return
        next_check = (
            now + timedelta(seconds=self.pacing.interval(current.status))
            if now is not None
            else None
        )
        await claims.release(conn, current.id, owner=self.owner, next_check_at=next_check)

    async def resend_delete(self, instance_id: str, novita_id: str) -> None:
        try:
            await self._novita.delete_instance(novita_id)
        except NovitaNotFoundError:
            pass  # gone already: the next read confirms it
        except NovitaError as error:
            log.warning("reconcile.delete_resend_failed", instance_id=instance_id, error=error.code)
            return
        self._contradicted_since.pop(instance_id, None)
        log.warning(
            "reconcile.delete_resent", instance_id=instance_id, novita_instance_id=novita_id
        )


def observation_of(observed: ProviderInstance | None) -> Observation:
    if observed is None:
        return Observation(status=None)
    return Observation(
        status=observed.status,
        spot_status=observed.spot_status,
        has_status_error=observed.status_error is not None,
    )


def port_mappings_of(observed: ProviderInstance | None) -> list[dict[str, Any]]:
    if observed is None:
        return []
    return [
        {"port": m.port, "type": m.type, "endpoint": m.endpoint} for m in observed.port_mappings
    ]


def merged_port_mappings(
    current: Instance, observed: ProviderInstance | None
) -> list[dict[str, Any]]:
    """The observed mappings; an endpoint the read left out (Novita's list documents none)
    is kept from what an earlier read said about the same port."""
    known = {(m["port"], m["type"]): m.get("endpoint") for m in current.port_mappings}
    return [
        m if m["endpoint"] else {**m, "endpoint": known.get((m["port"], m["type"]))}
        for m in port_mappings_of(observed)
    ]


def observation_detail(
    observed: ProviderInstance | None, observation: Observation
) -> dict[str, Any]:
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


def differs(current: Instance, observed: ProviderInstance) -> bool:
    """Whether applying `observed` could change anything recorded about `current`.

    Cheap and without I/O, so a relist of thousands of unchanged instances writes nothing.
    """
    observation = observation_of(observed)
    target = map_provider_status(current.status, observation).target or current.status
    if target is not current.status:
        return True
    if current.provider_status != stored_provider_status(observation.status):
        return True
    return list(current.port_mappings) != merged_port_mappings(current, observed)
