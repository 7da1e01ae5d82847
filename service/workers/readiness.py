"""The readiness worker: `running` → `ready` once the app answers; `failed` if it never does.

Each batch reads the `running` rows, probes those due (every `readiness_interval` per
instance, kept in memory: probes cost Novita nothing, and a restarted process simply probes
at once), and records the verdict through `change_status` (source `reconciler`):

- every target passes → `ready` (kind `ready`, the probe results in the detail);
- not yet, and `startup_timeout` has passed since `running_at` → `failed`,
  reason `startup_timeout` (the instance stays at Novita until the client deletes it);
- otherwise nothing is recorded; the next probe comes after the interval.

A row is claimed while it is probed (`claims.claim_for_probe`), so with several processes
each instance is probed by one at a time, and a poll in flight is not raced. The verdict
is only written if the row is still in the run that was probed (same `running_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog

from service.clock import Clock
from service.db import claims, sweeps
from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Instance, Status
from service.readiness import Prober, ProbeResult, ProbeTarget, probe_targets, readiness_path
from service.resources import Resources, new_owner_id
from service.settings import Settings
from service.workers.loop import WorkerLoop

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT = "startup_timeout"


@dataclass(frozen=True, slots=True)
class ReadinessConfig:
    interval: float = 5.0
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
    ) -> None:
        if not owner:
            raise ValueError("a readiness worker needs an owner id for its claims")
        self._db = database
        self._clock = clock
        self.owner = owner
        self.prober = prober
        self.config = config or ReadinessConfig()
        # Read by /health and /metrics.
        self.awaiting = 0  # running instances not yet ready, at the last batch
        self.probes = 0
        self.ready_total = 0
        self.timed_out_total = 0
        self._refusals_reported: set[str] = set()

    @classmethod
    def from_resources(cls, resources: Resources) -> ReadinessWorker:
        settings = resources.settings
        return cls(
            database=resources.database,
            clock=resources.clock,
            owner=resources.owner or new_owner_id(),
            prober=Prober(
                timeout=settings.readiness_probe_timeout,
                concurrency=settings.readiness_concurrency,
                allow_private=resources.allow_private_probe_targets,
            ),
            config=ReadinessConfig.from_settings(settings),
        )

    async def run_once(self) -> int:
        async with self._db.read() as conn:
            running = await sweeps.running_instances(conn, limit=self.config.scan_limit)
        self.awaiting = len(running)
        self._refusals_reported &= {instance.id for instance in running}
        now = self._clock.now()
        # The pace is on the row (`next_probe_at`, set with the claim), shared by processes.
        due = [i for i in running if i.next_probe_at is None or i.next_probe_at <= now]
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
                probe_again_at=now + timedelta(seconds=self.config.interval),
            )
        plans = {i.id: probe_targets(i.port_mappings, i.readiness) for i in claimed}
        jobs = {
            i.id: (targets, readiness_path(i.readiness))
            for i in claimed
            if (targets := plans[i.id])
        }
        results = await self.prober.probe_many(jobs)
        self.probes += sum(len(found) for found in results.values())
        for instance in claimed:
            try:
                await self._conclude(instance, plans[instance.id], results.get(instance.id, []))
            except Exception:  # one row's failure must not cost the others their verdict
                log.exception("readiness.record_failed", instance_id=instance.id)
        return len(claimed)

    async def _conclude(
        self,
        instance: Instance,
        targets: list[ProbeTarget] | None,
        results: list[ProbeResult],
    ) -> None:
        self._report_refusals(instance, results)
        passed = targets == [] or (bool(results) and all(r.passed for r in results))
        now = self._clock.now()
        deadline = (instance.running_at or now) + timedelta(seconds=self.config.startup_timeout)
        detail = {"probes": [r.summary() for r in results]}
        async with self._db.transaction() as conn:
            current = await repo.get_instance(conn, instance.id, for_update=True)
            same_run = (
                current.status is Status.RUNNING and current.running_at == instance.running_at
            )
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
                self.ready_total += 1
                log.info("readiness.ready", instance_id=instance.id)
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
                self.timed_out_total += 1
                log.warning(
                    "readiness.startup_timeout",
                    instance_id=instance.id,
                    probes=detail["probes"],
                )
            await claims.release(conn, instance.id, owner=self.owner)

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
    return WorkerLoop(ReadinessWorker.from_resources(resources), idle_interval=1.0)
