"""Applies stored provider webhooks to instances, in batches, oldest first.

Webhooks are hints that lower latency; the reconciler's reads are the truth. So an event
is applied only when it is the newest thing known about its instance (an event observed
before the instance's newest applied observation is recorded as `stale` and moves
nothing), only along legal transitions, and never against an action the client just asked
for (`superseded`: the next poll settles it). Events for instances we do not know are kept
(`unknown_instance`) for the reconciler's relist. Every stored event gets an outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import inbox
from service.db import repository as repo
from service.db.engine import Database
from service.db.inbox import StoredWebhook
from service.domain import EventSource, Status
from service.provisioning.status_map import (
    Observation,
    contradicts_action,
    map_provider_status,
    stored_provider_status,
    transition_path,
)
from service.resources import Resources
from service.workers.loop import WorkerLoop

log = structlog.get_logger(__name__)

STATUS_EVENTS = frozenset({"instance.status_changed", "instance.spot_reclaim"})
PRUNE_EVERY = timedelta(minutes=10)


def observed_time(event: StoredWebhook) -> datetime:
    """When the provider saw what the event says: `data.observedAt`, else the envelope's
    `timestamp` (ISO 8601 or Unix seconds), else when we received it; never later than
    when we received it."""
    data = event.payload.get("data") or {}
    for value in (data.get("observedAt"), event.payload.get("timestamp")):
        parsed = _parse_time(value)
        if parsed is not None:
            return min(parsed, event.received_at)
    return event.received_at


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            # In UTC, as stored; a time at the calendar's edge cannot be, and is ignored.
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            return None
    return None


class InboxApplier:
    name = "applier"

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        batch_size: int = 500,
        retention: timedelta = timedelta(days=4),
    ) -> None:
        self._db = database
        self._clock = clock
        self.batch_size = batch_size
        self.retention = retention
        self._last_prune: datetime | None = None
        self.applied = 0

    @classmethod
    def from_resources(cls, resources: Resources) -> InboxApplier:
        return cls(
            resources.database,
            resources.clock,
            retention=timedelta(days=resources.settings.inbox_retention_days),
        )

    async def run_once(self) -> int:
        now = self._clock.now()
        async with self._db.transaction() as conn:
            events = await inbox.claim_unprocessed(conn, limit=self.batch_size)
            # One query resolves the whole batch; only events for known instances pay for
            # a savepoint and a state change.
            known = await repo.ids_by_novita_id(
                conn, sorted({e.provider_instance_id for e in events if e.provider_instance_id})
            )
            outcomes: dict[int, str] = {}
            for event in events:
                quick = self._triage(event, known)
                if quick is not None:
                    outcomes[event.id] = quick
                    continue
                try:
                    # A savepoint per event: one bad event cannot sink the batch.
                    async with conn.begin_nested():
                        outcomes[event.id] = await self._apply(
                            conn, event, known[str(event.provider_instance_id)], now
                        )
                except Exception:
                    log.exception("webhook.apply_failed", webhook_id=event.webhook_id)
                    outcomes[event.id] = "error"
            await inbox.mark_processed(conn, outcomes, now=now)
        self.applied += sum(outcome == "applied" for outcome in outcomes.values())
        await self._prune(now)
        return len(events)

    @staticmethod
    def _triage(event: StoredWebhook, known: dict[str, str]) -> str | None:
        """The outcome of an event that needs no state change, else None."""
        if event.event_type not in STATUS_EVENTS and event.event_type != "instance.ready":
            return "ignored_type"
        if event.provider_instance_id is None:
            return "no_instance_id"
        if event.provider_instance_id not in known:
            return "unknown_instance"
        return None

    async def _apply(
        self, conn: AsyncConnection, event: StoredWebhook, instance_id: str, now: datetime
    ) -> str:
        observed_at = observed_time(event)
        current = await repo.get_instance(conn, instance_id, for_update=True)
        if current.is_terminal:
            return "terminal"
        newest = current.provider_observed_at
        # A future time (recorded before times were bounded) is no observation: ignored.
        if newest is not None and newest <= self._clock.now() and observed_at <= newest:
            return "stale"
        data = event.payload.get("data") or {}
        if event.event_type == "instance.ready":
            if current.status is not Status.RUNNING:
                return "ignored_state"
            path: tuple[Status, ...] = (Status.READY,)
            provider_status = current.provider_status
            reason = None
        else:
            raw_status = data.get("status")
            observation = Observation(
                status=raw_status if isinstance(raw_status, str) else None,
                spot_status=data.get("spotStatus") or None,
                has_status_error=bool(data.get("statusError")),
            )
            if observation.status is None:
                return "no_status"
            decision = map_provider_status(current.status, observation)
            if decision.target is None:
                return "unrecognised_status"
            if contradicts_action(current.status, decision.target):
                return "superseded"
            path = transition_path(current.status, decision.target)
            if not path:
                return "refused"
            provider_status = stored_provider_status(observation.status)
            reason = decision.reason
        changed = False
        for step in path:
            result = await repo.change_status(
                conn,
                current.id,
                step,
                source=EventSource.WEBHOOK,
                now=now,
                reason=reason if step is path[-1] else None,
                provider_status=provider_status,
                observed_at=observed_at,
                detail={"webhookId": event.webhook_id},
            )
            changed |= result.event is not None
        if changed:
            log.info("webhook.applied", instance_id=current.id, status=path[-1].value)
        return "applied" if changed else "unchanged"

    async def _prune(self, now: datetime) -> None:
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        async with self._db.transaction() as conn:
            pruned = await inbox.prune(conn, received_before=now - self.retention)
        if pruned:
            log.info("webhook.inbox_pruned", rows=pruned)


def build_applier_loop(resources: Resources) -> WorkerLoop:
    loop = WorkerLoop(InboxApplier.from_resources(resources), idle_interval=1.0)
    if resources.inbox is not None:
        resources.inbox.on_stored.append(loop.wake)  # apply as soon as a batch commits
    return loop
