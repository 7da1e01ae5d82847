"""Applies stored provider webhooks to instances, in batches, oldest first.

Webhooks are hints that lower latency; the reconciler's reads are the truth. Each event
goes through the same rules as a poll or the relist (`provider_truth.apply_observation`:
stale, unknown statuses, the action settle window); only a poll sends a lost delete again.
Events for instances we do not know are kept (`unknown_instance`) for the reconciler's
relist. Every stored event gets an outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import inbox, provider_facts
from service.db.engine import Database
from service.db.inbox import StoredWebhook
from service.db.provider_facts import ProviderFacts
from service.domain import EventSource
from service.provisioning.status_map import Observation
from service.resources import Resources
from service.workers.loop import WorkerLoop
from service.workers.provider_truth import (
    Report,
    Verdict,
    apply_observation,
    confirmed,
    plan,
)

log = structlog.get_logger(__name__)

STATUS_EVENTS = frozenset({"instance.status_changed", "instance.spot_reclaim"})
PRUNE_EVERY = timedelta(minutes=10)
# Seconds the applier rests after a batch that did work (see build_applier_loop).
BUSY_PAUSE = 0.1


def _report(event: StoredWebhook) -> Report | None:
    """What a status event says (None: it says no status)."""
    payload = event.payload
    data = payload.get("data") or {}
    raw_status = data.get("status")
    ready = event.event_type == "instance.ready"
    observation = Observation(
        status=raw_status if isinstance(raw_status, str) else None,
        spot_status=data.get("spotStatus") or None,
        has_status_error=bool(data.get("statusError")),
    )
    if not ready and observation.status is None:
        return None
    return Report(
        observation=observation,
        observed_at=observed_time(payload, event.received_at),
        source=EventSource.WEBHOOK,
        detail={"webhookId": event.webhook_id},
        ready=ready,
    )


def observed_time(payload: Mapping[str, Any], received_at: datetime) -> datetime:
    """When the provider saw what the event says: `data.observedAt`, else the envelope's
    `timestamp` (ISO 8601 or Unix seconds), else when we received it; never later than
    when we received it."""
    data = payload.get("data") or {}
    for value in (data.get("observedAt"), payload.get("timestamp")):
        parsed = _parse_time(value)
        if parsed is not None:
            return min(parsed, received_at)
    return received_at


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
        batch_size: int = 1000,
        retention: timedelta = timedelta(days=4),
        action_settle: float = 30.0,
    ) -> None:
        self._db = database
        self._clock = clock
        self.batch_size = batch_size
        self.action_settle = action_settle
        self.retention = retention
        self._last_prune: datetime | None = None
        self.applied = 0

    @classmethod
    def from_resources(cls, resources: Resources) -> InboxApplier:
        return cls(
            resources.database,
            resources.clock,
            retention=timedelta(days=resources.settings.inbox_retention_days),
            action_settle=resources.settings.action_settle_seconds,
        )

    async def run_once(self) -> int:
        now = self._clock.now()
        async with self._db.transaction() as conn:
            events = await inbox.claim_unprocessed(conn, limit=self.batch_size)
            # One query reads (and locks) every instance the batch is about.
            rows = await provider_facts.by_novita_id(
                conn,
                sorted({e.provider_instance_id for e in events if e.provider_instance_id}),
                for_update=True,
            )
            batch = _Batch(conn, rows)
            outcomes: dict[int, str] = {}
            for event in events:
                quick = self._triage(event, rows)
                if quick is not None:
                    outcomes[event.id] = quick
                    continue
                outcomes[event.id] = await self._apply(batch, event, now)
            await batch.write_confirmed()
            # Stamped as the batch is marked, so `processed_at - received_at` is the lag.
            await inbox.mark_processed(conn, outcomes, now=self._clock.now())
        self.applied += sum(outcome == "applied" for outcome in outcomes.values())
        await self._prune(now)
        return len(events)

    @staticmethod
    def _triage(event: StoredWebhook, known: Mapping[str, ProviderFacts]) -> str | None:
        """The outcome of an event that needs no state change, else None."""
        if event.event_type not in STATUS_EVENTS and event.event_type != "instance.ready":
            return "ignored_type"
        if event.provider_instance_id is None:
            return "no_instance_id"
        if event.provider_instance_id not in known:
            return "unknown_instance"
        return None

    async def _apply(self, batch: _Batch, event: StoredWebhook, now: datetime) -> str:
        novita_id = str(event.provider_instance_id)
        current = batch.rows[novita_id]
        try:
            report = _report(event)
            if report is None:
                return "no_status"
            planned = plan(current, report, now=now)
        except Exception:
            log.exception("webhook.apply_failed", webhook_id=event.webhook_id)
            return "error"
        if planned.verdict is not None:
            return planned.verdict.value
        if planned.confirms:
            # Most webhooks say what we know already: no event, and every such report of
            # the batch about one instance is written in one UPDATE at the end.
            batch.confirm(novita_id, confirmed(current, report, planned, now))
            return (Verdict.UNRECOGNISED if planned.unrecognised else Verdict.UNCHANGED).value
        # A change of status (or a contradicted action): the full rule, row by row.
        await batch.write_confirmed(novita_id)
        try:
            # A savepoint per event: one bad event cannot sink the batch.
            async with batch.conn.begin_nested():
                applied = await apply_observation(
                    batch.conn, current.id, report, now=now, settle_seconds=self.action_settle
                )
        except Exception:
            log.exception("webhook.apply_failed", webhook_id=event.webhook_id)
            applied = None
        await batch.reread(novita_id)
        if applied is None:
            return "error"
        if applied.recorded:
            log.info("webhook.applied", instance_id=current.id, status=applied.status)
        if applied.verdict is Verdict.RESEND_DELETE:
            return Verdict.SUPERSEDED.value  # only a poll sends a delete again
        return applied.verdict.value

    async def _prune(self, now: datetime) -> None:
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        async with self._db.transaction() as conn:
            pruned = await inbox.prune(conn, received_before=now - self.retention)
        if pruned:
            log.info("webhook.inbox_pruned", rows=pruned)


class _Batch:
    """The rows one batch of events is about, locked, as the events applied so far left
    them; those changed by confirmations are written at the end (`write_confirmed`)."""

    def __init__(self, conn: AsyncConnection, rows: dict[str, ProviderFacts]) -> None:
        self.conn = conn
        self.rows = rows
        self._read_version: dict[str, int] = {}  # of the rows confirmed, not yet written

    def confirm(self, novita_id: str, facts: ProviderFacts) -> None:
        self._read_version.setdefault(novita_id, self.rows[novita_id].version)
        self.rows[novita_id] = facts

    async def write_confirmed(self, novita_id: str | None = None) -> None:
        """Write the confirmations kept in memory (of one instance, or of all)."""
        if novita_id is None:
            pending = list(self._read_version)
        else:
            pending = [novita_id] if novita_id in self._read_version else []
        await provider_facts.write(
            self.conn, [(self._read_version.pop(key), self.rows[key]) for key in pending]
        )

    async def reread(self, novita_id: str) -> None:
        self.rows.update(await provider_facts.by_novita_id(self.conn, [novita_id]))


def build_applier_loop(resources: Resources) -> WorkerLoop:
    # Under load, a batch after each of the writer's commits (milliseconds apart) would
    # pay a transaction for a handful of events and take a large share of the core from
    # ingest; resting BUSY_PAUSE after a batch gathers the events into batches of hundreds.
    loop = WorkerLoop(
        InboxApplier.from_resources(resources), idle_interval=1.0, busy_pause=BUSY_PAUSE
    )
    if resources.inbox is not None:
        resources.inbox.on_stored.append(loop.wake)  # apply as soon as a batch commits
    return loop
