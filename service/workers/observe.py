"""Applying one read of Novita to one instance: the per-instance poll and the relist.

The rules are those of every channel, written once in `provider_truth.apply_observation`
(docs/architecture.md, docs/novita-facts.md); this module adds what only a read does:

- not found: `deleted` if we were deleting, else `failed` with reason `lost`;
- a delete Novita still has not started once the action has settled is sent again
  (deletes are idempotent);
- next check: while transitional, `transitional_interval` when the reconciler paces by the
  call budget (`call_budget`), else `fast_interval`; otherwise the stable pace (`Pacing`):
  `slow_interval`, stretched when the instances polled at it would take more than their
  share of the Novita rate limit; a successful read clears the row's failed attempts.

A poll holds a claim on the row and hands it back here (`release_claim=True`); the relist
holds none and leaves claims alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import claims
from service.db.engine import Database
from service.domain import TRANSITIONAL_STATUSES, EventSource, Instance, Status
from service.novita import Instance as ProviderInstance
from service.novita import NovitaClient, NovitaError, NovitaNotFoundError
from service.provisioning.status_map import (
    Observation,
    map_provider_status,
    stored_provider_status,
)
from service.workers.provider_truth import Report, Verdict, apply_observation
from service.workers.provider_truth import merged_port_mappings as merge_reported_ports

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
    # Set by the reconciler from the call budget; None: `fast_interval`.
    transitional_interval: float | None = None

    def interval(self, status: Status) -> float:
        if status in TRANSITIONAL_STATUSES:
            return self.transitional_interval or self.fast_interval
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

    @property
    def novita(self) -> NovitaClient:
        return self._novita

    async def recount(self) -> None:
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
        """Apply what Novita said (`None`: it has no such instance) when asked at `asked_at`,
        in a transaction of its own."""
        await self.recount()
        async with self._db.transaction() as conn:
            return await self._apply(conn, instance_id, observed, asked_at, release_claim)

    async def apply_many(
        self, reads: Sequence[tuple[str, ProviderInstance]], asked_at: datetime
    ) -> dict[str, ApplyOutcome]:
        """Apply several reads of one listing (instance id, what Novita said), all in one
        transaction, rows locked in id order (two processes applying overlapping listings
        never wait on each other in a cycle). Should any row fail, that transaction is
        rolled back and each row is applied in a transaction of its own, so one row's
        failure costs only that row its change (logged; the next read brings it again).
        Claims are left alone. Returns the outcome of each row applied."""
        await self.recount()
        ordered = sorted(reads, key=lambda read: read[0])
        if not ordered:
            return {}
        # What was recorded is logged once committed: a batch rolled back is applied again.
        repairs: list[dict[str, Any]] = []
        try:
            async with self._db.transaction() as conn:
                outcomes = {
                    instance_id: await self._apply(
                        conn, instance_id, observed, asked_at, False, repairs
                    )
                    for instance_id, observed in ordered
                }
        except Exception:
            log.info("reconcile.batch_apply_failed", rows=len(ordered), exc_info=True)
        else:
            _log_repairs(repairs)
            return outcomes
        outcomes = {}
        for instance_id, observed in ordered:
            repairs = []
            try:
                async with self._db.transaction() as conn:
                    outcomes[instance_id] = await self._apply(
                        conn, instance_id, observed, asked_at, False, repairs
                    )
            except Exception:
                log.exception("reconcile.apply_failed", instance_id=instance_id)
                continue
            _log_repairs(repairs)
        return outcomes

    async def _apply(
        self,
        conn: AsyncConnection,
        instance_id: str,
        observed: ProviderInstance | None,
        asked_at: datetime,
        release_claim: bool,
        repairs: list[dict[str, Any]] | None = None,
    ) -> ApplyOutcome:
        """Apply one read in `conn`'s transaction; each change recorded is logged, or added
        to `repairs` for the caller to log once its transaction has committed."""
        now = self._clock.now()
        observation = observation_of(observed)
        report = Report(
            observation=observation,
            observed_at=min(asked_at, now),
            source=EventSource.RECONCILER,
            detail=observation_detail(observed, observation),
            port_mappings=port_mappings_of(observed),
        )
        applied = await apply_observation(
            conn,
            instance_id,
            report,
            now=now,
            settle_seconds=self.pacing.action_settle,
            next_check_at=lambda status: now + timedelta(seconds=self.pacing.interval(status)),
        )
        current = applied.before
        recorded = [
            {
                "instance_id": current.id,
                "from_status": event.from_status,
                "to_status": status.value,
                "provider_status": observation.status,
                "reason": event.reason,
            }
            for status, event in applied.recorded
        ]
        if repairs is None:
            _log_repairs(recorded)
        else:
            repairs += recorded
        if applied.verdict is Verdict.TERMINAL:
            return ApplyOutcome()
        if applied.verdict is Verdict.STALE:
            # Something newer (a webhook) was applied while we were asking.
            await self._hand_back(conn, current, None, release_claim)
            return ApplyOutcome()
        if applied.verdict in (Verdict.SUPERSEDED, Verdict.REFUSED, Verdict.RESEND_DELETE):
            await self._hand_back(conn, current, now, release_claim)
            return ApplyOutcome(resend_delete=applied.verdict is Verdict.RESEND_DELETE)
        if release_claim:
            await claims.release(conn, instance_id, owner=self.owner, failed_attempts=0)
        return ApplyOutcome(changed=bool(applied.recorded), status=applied.status)

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
        await claims.release(
            conn, current.id, owner=self.owner, next_check_at=next_check, failed_attempts=0
        )

    async def resend_delete(self, instance_id: str, novita_id: str) -> None:
        try:
            await self._novita.delete_instance(novita_id)
        except NovitaNotFoundError:
            pass  # gone already: the next read confirms it
        except NovitaError as error:
            log.warning("reconcile.delete_resend_failed", instance_id=instance_id, error=error.code)
            return
        log.warning(
            "reconcile.delete_resent", instance_id=instance_id, novita_instance_id=novita_id
        )


def _log_repairs(repairs: list[dict[str, Any]]) -> None:
    for fields in repairs:
        log.info("reconcile.instance_repaired", **fields)


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
    """The observed mappings, endpoints the read left out kept from earlier reads."""
    return merge_reported_ports(current, port_mappings_of(observed))


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
