"""The readiness worker: `running` → `ready` once the app answers; `failed` if it never does.

Each batch reads the `running` rows, probes those due (all at once, up to the prober's
concurrency), and records the verdicts through `change_status` (source `reconciler`),
all in one transaction (each in one of its own should one fail). When a probe is due
(`next_probe_at` on the row, so every process keeps to one pace per instance):

- at once when an instance is recorded `running`, by a poll, the relist or a webhook:
  the commit leaves a note (`provider_truth.RUNNING_OBSERVED`) that wakes this worker;
- then `first_retry` seconds later, and after that as long again as the instance has been
  running (so the waits double: 0.25, 0.25, 0.5, 1, 2 s...), up to `readiness_interval`,
  until `ready` or the startup timeout;
- a port to probe without an endpoint yet (Novita said `running` without saying where
  the ports answer, as a webhook does) is read from Novita first (`get_instance`, at
  TRANSITIONAL priority) and what it says is applied like a poll.

The verdict:

- every target passes → `ready` (kind `ready`, the probe results in the detail);
- not yet, and `startup_timeout` has passed since `running_at` → `failed`,
  reason `startup_timeout` (the instance stays at Novita until the client deletes it);
- otherwise nothing is recorded; the next probe comes after the interval.

A row is claimed while it is probed (`claims.claim_for_probe`), so with several processes
each instance is probed by one at a time, and a poll in flight is not raced. The verdict
is only written if the row is still in the run that was probed (same `running_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import claims, sweeps
from service.db import repository as repo
from service.db.engine import NOTIFICATIONS_QUEUED, CommitNotes, Database, note_after_commit
from service.domain import EventSource, Instance, Status
from service.novita import NovitaError, NovitaNotFoundError, Priority
from service.readiness import Prober, ProbeResult, ProbeTarget, probe_targets, readiness_path
from service.resources import Resources
from service.settings import Settings
from service.workers.loop import Figures, WorkerLoop
from service.workers.observe import ObservationApplier
from service.workers.provider_truth import RUNNING_OBSERVED
from service.workers.reconciler import ReconcilerConfig

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT = "startup_timeout"


@dataclass(frozen=True, slots=True)
class ReadinessConfig:
    interval: float = 5.0  # the longest wait between two probes of one instance
    first_retry: float = 0.25  # the wait after the first probe; then as long as it has run
    # run_once waits for a probe due sooner than this instead of returning to the loop.
    lookahead: float = 1.0
    startup_timeout: float = 900.0
    claim_ttl: float = 60.0
    batch_size: int = 200
    # Rows read per batch; the oldest runs come first and leave by ready or timeout.
    scan_limit: int = 5000

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadinessConfig:
        return cls(
            interval=settings.readiness_interval,
            startup_timeout=settings.startup_timeout,
            # A claim must outlast a batch of probes, each bounded by the probe timeout.
            claim_ttl=max(settings.claim_ttl_seconds, 3 * settings.readiness_probe_timeout),
        )


class ReadinessWorker:
    name = "readiness"

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        owner: str,
        prober: Prober,
        config: ReadinessConfig | None = None,
        applier: ObservationApplier | None = None,
    ) -> None:
        if not owner:
            raise ValueError("a readiness worker needs an owner id for its claims")
        self._db = database
        self._clock = clock
        self.owner = owner
        self.prober = prober
        self.config = config or ReadinessConfig()
        # Reads Novita for instances whose endpoints are not known yet (None: never).
        self.applier = applier
        # Read by /health and /metrics.
        self.awaiting = 0  # running instances not yet ready, at the last batch
        self.probes = 0
        self.ready_total = 0
        self.timed_out_total = 0
        self.endpoint_reads = 0
        self._refusals_reported: set[str] = set()
        self._soonest_probe: datetime | None = None  # of the rows read at the last batch
        self._hinted = asyncio.Event()

    def on_commit(self, notes: CommitNotes) -> bool:
        """A commit listener: True when the notes name instances that became `running`
        (their rows are due for a probe at once: this only says to look now)."""
        if notes.get(RUNNING_OBSERVED):
            self._hinted.set()
            return True
        return False

    @classmethod
    def from_resources(cls, resources: Resources) -> ReadinessWorker:
        settings = resources.settings
        owner = resources.owner
        return cls(
            database=resources.database,
            clock=resources.clock,
            owner=owner,
            prober=Prober(
                timeout=settings.readiness_probe_timeout,
                concurrency=settings.readiness_concurrency,
                allow_private=resources.allow_private_probe_targets,
            ),
            config=ReadinessConfig.from_settings(settings),
            applier=ObservationApplier(
                database=resources.database,
                novita=resources.novita,
                clock=resources.clock,
                owner=owner,
                pacing=ReconcilerConfig.from_settings(settings).pacing,
            ),
        )

    def figures(self, now: datetime) -> Figures:
        return {
            "awaiting": self.awaiting,
            "probes": self.probes,
            "readyTotal": self.ready_total,
            "timedOutTotal": self.timed_out_total,
            "endpointReads": self.endpoint_reads,
        }

    async def run_once(self) -> int:
        """Probe the instances due; if none is, wait (up to `lookahead`) for the next one
        due or for an instance to become `running`, and probe then."""
        self._hinted.clear()
        done = await self._probe_due()
        if done:
            return done
        if self._soonest_probe is None:
            return 0
        wait = (self._soonest_probe - self._clock.now()).total_seconds()
        if wait > self.config.lookahead:
            return 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hinted.wait(), timeout=max(wait, 0.0))
        self._hinted.clear()
        return await self._probe_due()

    def _probe_again_in(self, instance: Instance, now: datetime) -> float:
        """Seconds to the next probe: `first_retry`, then as long as it has been running."""
        running_for = (now - (instance.running_at or now)).total_seconds()
        return min(self.config.interval, max(self.config.first_retry, running_for))

    async def _probe_due(self) -> int:
        async with self._db.read() as conn:
            running = await sweeps.running_instances(conn, limit=self.config.scan_limit)
        self.awaiting = len(running)
        self._refusals_reported &= {instance.id for instance in running}
        now = self._clock.now()
        # The pace is on the row (`next_probe_at`, set with the claim), shared by processes.
        due = [i for i in running if i.next_probe_at is None or i.next_probe_at <= now]
        later = [i.next_probe_at for i in running if i.next_probe_at and i.next_probe_at > now]
        self._soonest_probe = min(later, default=None)
        due = due[: self.config.batch_size]
        if not due:
            return 0
        async with self._db.transaction() as conn:
            claimed = await claims.claim_for_probe(
                conn,
                [instance.id for instance in due],
                owner=self.owner,
                now=now,
                ttl=self.config.claim_ttl,
                # Each one's own pace is set with its verdict (`_conclude`).
                probe_again_at=now + timedelta(seconds=self.config.first_retry),
            )
        # Endpoint reads (rare: a webhook said `running`) go out together, like the probes.
        claimed = list(await asyncio.gather(*(self._with_endpoints(i) for i in claimed)))
        plans = {i.id: probe_targets(i.port_mappings, i.readiness, i.ports) for i in claimed}
        jobs = {
            i.id: (targets, readiness_path(i.readiness))
            for i in claimed
            if (targets := plans[i.id])
        }
        results = await self.prober.probe_many(jobs)
        self.probes += sum(len(found) for found in results.values())
        verdicts = [
            (instance, plans[instance.id], results.get(instance.id, [])) for instance in claimed
        ]
        await self._record_verdicts(verdicts)
        return len(claimed)

    async def _record_verdicts(
        self, verdicts: list[tuple[Instance, list[ProbeTarget] | None, list[ProbeResult]]]
    ) -> None:
        """Record the batch's verdicts in one transaction, rows locked in id order. Should
        any row fail, that transaction is rolled back and each verdict is recorded in a
        transaction of its own: one row's failure must not cost the others their verdict."""
        ordered = sorted(verdicts, key=lambda verdict: verdict[0].id)
        concluded: list[tuple[Instance, Status | None, list[ProbeResult]]] = []
        try:
            async with self._db.transaction() as conn:
                for instance, targets, results in ordered:
                    status = await self._conclude(conn, instance, targets, results)
                    concluded.append((instance, status, results))
        except Exception:
            log.info("readiness.batch_record_failed", instances=len(ordered), exc_info=True)
            concluded = []
            for instance, targets, results in ordered:
                try:
                    async with self._db.transaction() as conn:
                        status = await self._conclude(conn, instance, targets, results)
                except Exception:
                    log.exception("readiness.record_failed", instance_id=instance.id)
                    continue
                concluded.append((instance, status, results))
        for instance, status, results in concluded:
            if status is Status.READY:
                self.ready_total += 1
                log.info("readiness.ready", instance_id=instance.id)
            elif status is Status.FAILED:
                self.timed_out_total += 1
                log.warning(
                    "readiness.startup_timeout",
                    instance_id=instance.id,
                    probes=[r.summary() for r in results],
                )

    async def _with_endpoints(self, instance: Instance) -> Instance:
        """The instance, its port endpoints read from Novita first when a port to probe has
        none yet (the read is applied like a poll; the probe claim stays held)."""
        if self.applier is None or instance.novita_instance_id is None:
            return instance
        if probe_targets(instance.port_mappings, instance.readiness, instance.ports) is not None:
            return instance
        asked_at = self._clock.now()
        try:
            observed = await self.applier.novita.get_instance(
                instance.novita_instance_id, priority=Priority.TRANSITIONAL
            )
        except NovitaNotFoundError:
            return instance  # the next poll concludes what that means
        except NovitaError as error:
            log.info("readiness.endpoint_read_failed", instance_id=instance.id, error=error.code)
            return instance
        self.endpoint_reads += 1
        try:
            await self.applier.apply(instance.id, observed, asked_at, release_claim=False)
        except Exception:
            log.exception("readiness.endpoint_apply_failed", instance_id=instance.id)
            return instance
        async with self._db.read() as conn:
            return await repo.get_instance(conn, instance.id)

    async def _conclude(
        self,
        conn: AsyncConnection,
        instance: Instance,
        targets: list[ProbeTarget] | None,
        results: list[ProbeResult],
    ) -> Status | None:
        """Record one verdict; returns the status recorded (None: none, probe again)."""
        self._report_refusals(instance, results)
        passed = targets == [] or (bool(results) and all(r.passed for r in results))
        now = self._clock.now()
        deadline = (instance.running_at or now) + timedelta(seconds=self.config.startup_timeout)
        detail = {"probes": [r.summary() for r in results]}
        recorded: Status | None = None
        current = await repo.get_instance(conn, instance.id, for_update=True)
        same_run = current.status is Status.RUNNING and current.running_at == instance.running_at
        if same_run and passed:
            changes = {"next_check_at": current.next_check_at} if current.next_check_at else {}
            await repo.change_status(
                conn,
                instance.id,
                Status.READY,
                source=EventSource.RECONCILER,
                kind="ready",
                now=now,
                detail=detail if targets else {"probes": [], "note": "no port to probe"},
                changes=changes,
                locked=current,
            )
            note_after_commit(conn, NOTIFICATIONS_QUEUED, instance.id)
            recorded = Status.READY
        elif same_run and now >= deadline:
            await repo.change_status(
                conn,
                instance.id,
                Status.FAILED,
                source=EventSource.RECONCILER,
                kind="startup_timeout",
                reason=STARTUP_TIMEOUT,
                now=now,
                detail={**detail, "startupTimeout": self.config.startup_timeout},
                locked=current,
            )
            note_after_commit(conn, NOTIFICATIONS_QUEUED, instance.id)
            recorded = Status.FAILED
        elif same_run:
            again = now + timedelta(seconds=self._probe_again_in(instance, now))
            await sweeps.probe_again_at(conn, instance.id, again)
        await claims.release(conn, instance.id, owner=self.owner)
        return recorded

    def _report_refusals(self, instance: Instance, results: list[ProbeResult]) -> None:
        refused = [r for r in results if r.refused]
        if refused and instance.id not in self._refusals_reported:
            self._refusals_reported.add(instance.id)
            log.warning(
                "readiness.probe_refused",
                instance_id=instance.id,
                reasons=sorted({r.detail for r in refused}),
                hint="set ALLOW_PRIVATE_PROBE_TARGETS to probe private endpoints",
            )


def build_readiness_loop(resources: Resources) -> WorkerLoop:
    worker = ReadinessWorker.from_resources(resources)
    loop = WorkerLoop(worker, idle_interval=1.0)

    def on_commit(notes: CommitNotes) -> None:
        if worker.on_commit(notes):
            loop.wake()

    resources.database.commit_listeners.append(on_commit)
    return loop
