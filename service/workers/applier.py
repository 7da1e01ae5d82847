"""Applies stored provider webhooks to instances, in batches, oldest first.

Webhooks are hints that lower latency; the reconciler's reads are the truth. Each event
goes through the same rules as a poll or the relist (`provider_truth.apply_observation`:
stale, unknown statuses, the action settle window); only a poll sends a lost delete again.
Events for instances we do not know are kept (`unknown_instance`) for the reconciler's
relist. Every stored event gets an outcome.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import inbox, provider_facts
from service.db.engine import Database
from service.db.inbox import StoredWebhook
from service.db.provider_facts import ProviderFacts
from service.domain import EventSource
from service.metrics import APPLY_LAG_BUCKETS, Histogram
from service.provisioning.status_map import Observation
from service.resources import Resources
from service.workers.loop import Figures, WorkerLoop
from service.workers.provider_truth import (
    Report,
    Verdict,
    apply_observation,
    confirmed,
    plan,
)

log = structlog.get_logger(__name__)

STATUS_EVENTS = frozenset({"instance.status_changed", "instance.spot_reclaim"})
# Every event type the applier acts on; any other is `ignored_type`.
APPLIED_TYPES = tuple(sorted({*STATUS_EVENTS, "instance.ready"}))
# Seconds the applier rests after a batch that did work (see build_applier_loop).
BUSY_PAUSE = 0.05
# On a SQLite file: about how long one pass may hold the write lock that the webhook
# writer needs for every batch it acknowledges. Each pass's batch is sized from the time
# the last full ones took per event (between MIN_BATCH and `batch_size`), and while
# passes find full batches they follow one another (up to MAX_PASSES) without the rest.
PASS_SECONDS = 0.010
MIN_BATCH = 20
MAX_PASSES = 50


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


@dataclass(slots=True)
class _Pass:
    """What one pass over a batch decided: each event's outcome, and the events left to
    `apply_observation` (a change of status, or what follows one for the same instance)."""

    outcomes: dict[int, str] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)
    # Events the claim itself gave an outcome (PostgreSQL: `inbox.claim_settling`).
    settled: int = 0
    # Seconds from stored to marked, of each event given an outcome (recorded once committed).
    lags: list[float] = field(default_factory=list)


def _apply_pass(conn: sa.Connection, *, limit: int, now: datetime, clock: Clock) -> _Pass:
    """Claim up to `limit` events and decide each on the rows read (and locked) once for
    the batch; write what confirms a status in one statement and mark the outcomes.
    Synchronous, so it runs as one unit on a thread (SQLite file) or through `run_sync`."""
    done = _Pass()
    if conn.dialect.name == "postgresql":
        # The events that need no instance read are settled by the claim itself.
        claimed_at = clock.now()
        events, settled = inbox.claim_settling(
            conn, limit=limit, now=claimed_at, applied_types=APPLIED_TYPES
        )
        done.settled = len(settled)
        done.lags = [(claimed_at - event.received_at).total_seconds() for event in settled]
    else:
        events = inbox.claim(conn, limit=limit)
    rows = provider_facts.by_novita_id(
        conn,
        sorted({e.provider_instance_id for e in events if e.provider_instance_id}),
        for_update=True,
    )
    read_version: dict[str, int] = {}  # of each row confirmed: the version written over
    waiting: set[str] = set()  # instances with a deferred event: their later ones wait too
    for event in events:
        quick = _triage(event, rows)
        if quick is not None:
            done.outcomes[event.id] = quick
            continue
        novita_id = str(event.provider_instance_id)
        if novita_id in waiting:
            done.deferred.append(event.id)
            continue
        current = rows[novita_id]
        try:
            report = _report(event)
            planned = None if report is None else plan(current, report, now=now)
        except Exception:
            log.exception("webhook.apply_failed", webhook_id=event.webhook_id)
            done.outcomes[event.id] = "error"
            continue
        if report is None or planned is None:
            done.outcomes[event.id] = "no_status"
        elif planned.verdict is not None:
            done.outcomes[event.id] = planned.verdict.value
        elif planned.confirms:
            # Most webhooks say what we know already: no event, and every such report
            # about one instance comes down to one row written at the end.
            read_version.setdefault(novita_id, current.version)
            rows[novita_id] = confirmed(current, report, planned, now)
            verdict = Verdict.UNRECOGNISED if planned.unrecognised else Verdict.UNCHANGED
            done.outcomes[event.id] = verdict.value
        else:
            waiting.add(novita_id)
            done.deferred.append(event.id)
    provider_facts.write(conn, [(read_version[key], rows[key]) for key in read_version])
    # Stamped as the batch is marked, so `processed_at - received_at` is the lag.
    marked_at = clock.now()
    inbox.mark(conn, done.outcomes, now=marked_at)
    done.lags += _lags(events, done.outcomes, marked_at)
    return done


def _lags(events: list[StoredWebhook], marked: Mapping[int, str], at: datetime) -> list[float]:
    return [(at - event.received_at).total_seconds() for event in events if event.id in marked]


def _triage(event: StoredWebhook, known: Mapping[str, ProviderFacts]) -> str | None:
    """The outcome of an event that needs no state change, else None."""
    if event.event_type not in APPLIED_TYPES:
        return "ignored_type"
    if event.provider_instance_id is None:
        return "no_instance_id"
    if event.provider_instance_id not in known:
        return "unknown_instance"
    return None


class InboxApplier:
    name = "applier"

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        batch_size: int = 500,
        action_settle: float = 30.0,
        lag: Histogram | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self.batch_size = batch_size
        self.action_settle = action_settle
        # On a SQLite file the pass is one transaction on a thread of its own
        # (`Database.run_sync_transaction`).
        self._on_thread = database.sqlite_file is not None
        # Seconds a pass took per event (SQLite file), from the last full batches.
        self.seconds_per_event = 0.000025
        self.applied = 0
        # Stored → applied of each event, once its batch committed (/metrics).
        self.lag = lag if lag is not None else Histogram(APPLY_LAG_BUCKETS)

    @classmethod
    def from_resources(cls, resources: Resources) -> InboxApplier:
        return cls(
            resources.database,
            resources.clock,
            action_settle=resources.settings.action_settle_seconds,
            lag=resources.apply_lag,
        )

    def figures(self, now: datetime) -> Figures:
        return {"applied": self.applied}

    async def run_once(self) -> int:
        if not self._on_thread:
            return await self._run_pass(self.batch_size)
        done = 0
        for _ in range(MAX_PASSES):
            limit = self.pass_limit()
            started = time.perf_counter()
            applied = await self._run_pass(limit)
            done += applied
            if applied < limit:
                return done
            # A full batch: its time says how many events fit in the next pass's budget.
            took = (time.perf_counter() - started) / applied
            self.seconds_per_event += (took - self.seconds_per_event) / 4
        return done

    def pass_limit(self) -> int:
        """How many events the next pass takes (SQLite file: what fits in PASS_SECONDS)."""
        fits = int(PASS_SECONDS / max(self.seconds_per_event, 1e-7))
        return max(MIN_BATCH, min(self.batch_size, fits))

    async def _run_pass(self, limit: int) -> int:
        now = self._clock.now()
        work = partial(_apply_pass, limit=limit, now=now, clock=self._clock)
        lags: list[float] = []
        if self._on_thread:
            done = await self._db.run_sync_transaction(work)
            lags += done.lags
            outcomes = done.outcomes
            if done.deferred:
                # Left unmarked by the pass: claimed again here, oldest first, whoever
                # else took some meanwhile.
                async with self._db.transaction() as conn:
                    deferred = await self._apply_deferred(conn, done.deferred, now)
                outcomes = {**outcomes, **deferred.outcomes}
                lags += deferred.lags
        else:
            async with self._db.transaction() as conn:
                done = await conn.run_sync(work)
                outcomes = done.outcomes
                deferred = _Pass()
                if done.deferred:
                    deferred = await self._apply_deferred(conn, done.deferred, now)
                    outcomes = {**outcomes, **deferred.outcomes}
            lags += done.lags + deferred.lags
        for seconds in lags:
            self.lag.observe(seconds)
        self.applied += sum(outcome == "applied" for outcome in outcomes.values())
        return len(done.outcomes) + len(done.deferred) + done.settled

    async def _apply_deferred(self, conn: AsyncConnection, ids: list[int], now: datetime) -> _Pass:
        """Each event through `apply_observation`, in order, each in a savepoint (one bad
        event cannot sink the others)."""
        events = await conn.run_sync(lambda sync: inbox.claim(sync, limit=len(ids), ids=ids))
        done = _Pass()
        for event in events:
            done.outcomes[event.id] = await self._apply_one(conn, event, now)
        marked_at = self._clock.now()
        await conn.run_sync(lambda sync: inbox.mark(sync, done.outcomes, now=marked_at))
        done.lags = _lags(events, done.outcomes, marked_at)
        return done

    async def _apply_one(self, conn: AsyncConnection, event: StoredWebhook, now: datetime) -> str:
        try:
            report = _report(event)
            if report is None:
                return "no_status"
            async with conn.begin_nested():
                rows = await conn.run_sync(
                    lambda sync: provider_facts.by_novita_id(
                        sync, [str(event.provider_instance_id)]
                    )
                )
                if not rows:
                    return "unknown_instance"
                (current,) = rows.values()
                applied = await apply_observation(
                    conn, current.id, report, now=now, settle_seconds=self.action_settle
                )
        except Exception:
            log.exception("webhook.apply_failed", webhook_id=event.webhook_id)
            return "error"
        if applied.recorded:
            log.info("webhook.applied", instance_id=current.id, status=applied.status)
        if applied.verdict is Verdict.RESEND_DELETE:
            return Verdict.SUPERSEDED.value  # only a poll sends a delete again
        return applied.verdict.value


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
