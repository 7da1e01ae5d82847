"""Idle auto-stop: stop (or delete) `ready` instances nobody has used for their idle time.

Each pass reads the ready instances with a policy, longest idle first, and acts on those
past their deadline (`service.policies.idle`). Acting takes the policy claim and reads the
row again, so a heartbeat that arrived meanwhile, or another policy worker, wins. The stop
goes through `Lifecycle` like a client's, with source `policy` and reason `idle`, so the
event, the notification and the reports see it; the detail keeps what a savings report
needs (idle minutes, since when, GPUs, price).

In dry-run mode nothing is stopped: one `idle_stop_dry_run` event per idle period records
what would have happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from service.clock import Clock
from service.db import policy as policy_db
from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Instance, Status
from service.errors import ServiceError
from service.lifecycle import Lifecycle
from service.policies.idle import IdleDefaults, IdlePolicy, effective_policy, idle_deadline
from service.policies.idle import idle_since as idle_period_start
from service.presenters import iso

log = structlog.get_logger(__name__)

IDLE = "idle"


@dataclass(frozen=True, slots=True)
class IdleStopConfig:
    defaults: IdleDefaults = field(default_factory=IdleDefaults)
    dry_run: bool = False
    claim_ttl: float = 60.0
    scan_limit: int = 500


class IdleStopper:
    name = "idle-stop"

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        database: Database,
        clock: Clock,
        owner: str,
        config: IdleStopConfig,
    ) -> None:
        self._lifecycle = lifecycle
        self._db = database
        self._clock = clock
        self.owner = owner
        self.config = config

    async def run_once(self) -> int:
        now = self._clock.now()
        async with self._db.read() as conn:
            candidates = await policy_db.idle_candidates(
                conn,
                include_without_policy=self.config.defaults.idle_minutes is not None,
                now=now,
                limit=self.config.scan_limit,
            )
        done = 0
        for instance in candidates:
            policy = self._due_policy(instance, now)
            if policy is None:
                continue
            if self.config.dry_run:
                done += await self._record_dry_run(instance, policy, now)
            else:
                done += await self._act(instance, policy, now)
        return done

    def _due_policy(self, instance: Instance, now: datetime) -> IdlePolicy | None:
        policy = effective_policy(instance, self.config.defaults)
        if policy is None:
            return None
        deadline = idle_deadline(instance, policy, self.config.defaults.grace_minutes)
        return policy if deadline is not None and now >= deadline else None

    def _detail(self, instance: Instance, policy: IdlePolicy) -> dict[str, Any]:
        return {
            "idleMinutes": policy.idle_minutes,
            "idleSince": iso(idle_period_start(instance)),
            "action": policy.action,
            "gpuNum": instance.gpu_num,
            "pricePerHour": str(instance.price_per_hour)
            if instance.price_per_hour is not None
            else None,
            "dryRun": self.config.dry_run,
        }

    async def _act(self, instance: Instance, policy: IdlePolicy, now: datetime) -> int:
        async with policy_db.claimed(
            self._db,
            instance.id,
            status=Status.READY,
            owner=self.owner,
            now=now,
            ttl=self.config.claim_ttl,
        ) as taken:
            if not taken:
                return 0
            # A heartbeat may have landed between the scan and the claim.
            fresh = await self._lifecycle.get(instance.id)
            policy_now = self._due_policy(fresh, self._clock.now())
            if policy_now is None:
                return 0
            detail = self._detail(fresh, policy_now)
            try:
                if policy_now.action == "delete":
                    await self._lifecycle.delete(
                        fresh.id, source=EventSource.POLICY, reason=IDLE, detail=detail
                    )
                else:
                    await self._lifecycle.stop(
                        fresh.id, source=EventSource.POLICY, reason=IDLE, detail=detail
                    )
            except ServiceError as exc:
                # Novita refused or is unavailable: the next pass tries again.
                log.warning(
                    "policy.idle_stop_failed", instance_id=fresh.id, error=exc.code, **detail
                )
                return 0
        event = "policy.idle_delete" if policy_now.action == "delete" else "policy.idle_stop"
        log.info(event, instance_id=fresh.id, **detail)
        return 1

    @staticmethod
    def _already_noted(instance: Instance) -> bool:
        since = idle_period_start(instance)
        noted = instance.idle_noted_at
        return since is None or (noted is not None and noted >= since)

    async def _record_dry_run(self, instance: Instance, policy: IdlePolicy, now: datetime) -> int:
        if self._already_noted(instance):
            return 0  # this idle period is recorded already
        async with policy_db.claimed(
            self._db,
            instance.id,
            status=Status.READY,
            owner=self.owner,
            now=now,
            ttl=self.config.claim_ttl,
        ) as taken:
            if not taken:
                return 0
            instance = await self._lifecycle.get(instance.id)
            if self._already_noted(instance):
                return 0  # another worker recorded it between our scan and our claim
            detail = self._detail(instance, policy)
            async with self._db.transaction() as conn:
                await repo.append_note(
                    conn,
                    instance.id,
                    kind="idle_stop_dry_run",
                    source=EventSource.POLICY,
                    now=now,
                    reason=IDLE,
                    detail=detail,
                )
                await policy_db.mark_idle_noted(conn, instance.id, at=now)
        log.info("policy.idle_dry_run", instance_id=instance.id, **detail)
        return 1
