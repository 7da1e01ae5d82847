"""Spot-interruption recovery: what happens to an `interrupted` instance after the reclaim.

The reclaim's own transition already recorded the event and queued `instance.interrupted`;
this applies the instance's `onInterruption` policy (else the service default):

- `notify`: nothing more (looked at again only now and then, in case it is changed).
- `restart`: start it again through `Lifecycle.start`. A start refused for capacity counts
  as an attempt and is retried after a doubling backoff; other refusals (Novita busy or
  still moving the instance) wait without counting, bounded by the time limit.
- `recreate`: create a replacement from the original request in another region (the
  provisioner picks it), linked both ways with `replacement_created` / `replaces` events.
  Once the replacement is `ready` the original is deleted (reason `replaced`); a failed
  replacement counts as an attempt and another one is made.

Attempts and time are bounded; when either runs out the original goes `failed` with reason
`spot_recovery_exhausted` and the details in the event (which also notifies the client).
One policy worker at a time handles an instance (the policy claim).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from service.clock import Clock
from service.db import policy as policy_db
from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Instance, Status
from service.errors import NoCapacityToStartError, ServiceError
from service.lifecycle import Lifecycle
from service.policies.interruption import (
    InterruptionDefaults,
    InterruptionPolicy,
    effective_policy,
    is_exhausted,
    next_attempt_at,
    replacement_spec,
)
from service.presenters import iso

log = structlog.get_logger(__name__)

EXHAUSTED = "spot_recovery_exhausted"
ABANDONED = "spot_recovery_abandoned"
REPLACED = "replaced"
# A replacement deleted by someone else means it is not wanted: no other one is made.
_REPLACEMENT_GONE = frozenset({Status.DELETING, Status.DELETED})


@dataclass(frozen=True, slots=True)
class SpotRecoveryConfig:
    defaults: InterruptionDefaults = field(default_factory=InterruptionDefaults)
    claim_ttl: float = 60.0
    scan_limit: int = 200
    # How soon a replacement on its way is looked at again.
    recheck_seconds: float = 15.0
    # How soon an instance whose policy is `notify` is looked at again (a PATCH resets it).
    notify_recheck_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class _Recovery:
    attempts: int
    started_at: datetime


class SpotRecovery:
    name = "spot-recovery"

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        database: Database,
        clock: Clock,
        owner: str,
        config: SpotRecoveryConfig,
    ) -> None:
        self._lifecycle = lifecycle
        self._db = database
        self._clock = clock
        self.owner = owner
        self.config = config

    async def run_once(self) -> int:
        now = self._clock.now()
        async with self._db.read() as conn:
            candidates = await policy_db.interrupted_candidates(
                conn, now=now, limit=self.config.scan_limit
            )
        done = 0
        for instance in candidates:
            async with policy_db.claimed(
                self._db,
                instance.id,
                status=Status.INTERRUPTED,
                owner=self.owner,
                now=now,
                ttl=self.config.claim_ttl,
            ) as taken:
                if not taken:
                    continue
                fresh = await self._lifecycle.get(instance.id)
                if fresh.status is Status.INTERRUPTED:
                    done += await self._recover(fresh)
        return done

    # -- one instance ---------------------------------------------------------------------

    async def _recover(self, instance: Instance) -> int:
        policy = effective_policy(instance, self.config.defaults)
        now = self._clock.now()
        if policy.action == "notify":
            await self._postpone(
                instance, now + timedelta(seconds=self.config.notify_recheck_seconds)
            )
            return 0
        recovery = await self._current_recovery(instance, policy, now)
        if instance.replaced_by_instance_id is not None:
            waiting = await self._follow_replacement(instance, recovery, policy, now)
            if waiting is not None:
                return waiting
        if is_exhausted(recovery.attempts, recovery.started_at, policy, now):
            await self._give_up(instance, policy, recovery, EXHAUSTED, None)
            return 1
        if policy.action == "restart":
            return await self._restart(instance, policy, recovery)
        return await self._recreate(instance, recovery)

    async def _current_recovery(
        self, instance: Instance, policy: InterruptionPolicy, now: datetime
    ) -> _Recovery:
        """The recovery of this interruption, starting one if this is its first sight.

        A recovery started before the instance last ran belongs to an earlier interruption.
        """
        started = instance.recovery_started_at
        earlier = started is not None and (
            instance.running_at is not None and instance.running_at > started
        )
        if started is not None and not earlier:
            return _Recovery(instance.recovery_attempts, started)
        async with self._db.transaction() as conn:
            await policy_db.set_recovery(
                conn, instance.id, attempts=0, started_at=now, next_at=None
            )
            await repo.append_note(
                conn,
                instance.id,
                kind="spot_recovery_started",
                source=EventSource.POLICY,
                now=now,
                reason="spot_interrupted",
                detail=_policy_detail(policy),
            )
        log.info("policy.spot_recovery_started", instance_id=instance.id, action=policy.action)
        return _Recovery(0, now)

    async def _follow_replacement(
        self,
        instance: Instance,
        recovery: _Recovery,
        policy: InterruptionPolicy,
        now: datetime,
    ) -> int | None:
        """Finish, wait for or drop the current replacement; None: make another one."""
        assert instance.replaced_by_instance_id is not None
        replacement = await self._lifecycle.get(instance.replaced_by_instance_id)
        if replacement.status is Status.READY:
            detail = {"replacementId": replacement.id, "attempts": recovery.attempts}
            try:
                await self._lifecycle.delete(
                    instance.id, source=EventSource.POLICY, reason=REPLACED, detail=detail
                )
            except ServiceError as exc:
                log.warning(
                    "policy.spot_replace_delete_failed", instance_id=instance.id, error=exc.code
                )
                await self._postpone(instance, now + timedelta(seconds=self.config.recheck_seconds))
                return 0
            log.info("policy.spot_replaced", instance_id=instance.id, replacement_id=replacement.id)
            return 1
        if replacement.status in _REPLACEMENT_GONE:
            await self._give_up(
                instance,
                policy,
                recovery,
                ABANDONED,
                {"message": "the replacement was deleted", "replacementId": replacement.id},
            )
            return 1
        if replacement.status is not Status.FAILED:
            await self._postpone(instance, now + timedelta(seconds=self.config.recheck_seconds))
            return 0
        log.warning(
            "policy.spot_replacement_failed",
            instance_id=instance.id,
            replacement_id=replacement.id,
            reason=replacement.status_reason,
        )
        async with self._db.transaction() as conn:
            await policy_db.unlink_failed_replacement(conn, instance.id)
        return None

    async def _restart(
        self, instance: Instance, policy: InterruptionPolicy, recovery: _Recovery
    ) -> int:
        try:
            await self._lifecycle.start(
                instance.id, source=EventSource.POLICY, reason="spot_restart"
            )
        except NoCapacityToStartError as exc:
            attempts = recovery.attempts + 1
            error = {"code": exc.code, "message": exc.message}
            now = self._clock.now()
            if is_exhausted(attempts, recovery.started_at, policy, now):
                await self._give_up(
                    instance, policy, _Recovery(attempts, recovery.started_at), EXHAUSTED, error
                )
                return 1
            retry_at = next_attempt_at(attempts, now, self.config.defaults.backoff_seconds)
            async with self._db.transaction() as conn:
                await policy_db.set_recovery(
                    conn,
                    instance.id,
                    attempts=attempts,
                    started_at=recovery.started_at,
                    next_at=retry_at,
                )
            log.info(
                "policy.spot_restart_deferred",
                instance_id=instance.id,
                attempts=attempts,
                retry_at=iso(retry_at),
            )
            return 1
        except ServiceError as exc:
            # Not a verdict on capacity (Novita busy, or still moving the instance): wait
            # without spending an attempt; the time limit still bounds the recovery.
            retry_at = next_attempt_at(1, self._clock.now(), self.config.defaults.backoff_seconds)
            await self._postpone(instance, retry_at)
            log.info("policy.spot_restart_postponed", instance_id=instance.id, error=exc.code)
            return 0
        async with self._db.transaction() as conn:
            await policy_db.set_recovery(
                conn, instance.id, attempts=None, started_at=None, next_at=None
            )
        log.info("policy.spot_restart", instance_id=instance.id, attempts=recovery.attempts + 1)
        return 1

    async def _recreate(self, instance: Instance, recovery: _Recovery) -> int:
        now = self._clock.now()
        attempts = recovery.attempts + 1
        spec = replacement_spec(instance)
        async with self._db.transaction() as conn:
            created = await repo.insert_instance(conn, spec, now=now, source=EventSource.POLICY)
            await policy_db.link_replacement(conn, instance.id, created.instance.id, now=now)
            await policy_db.set_recovery(
                conn,
                instance.id,
                attempts=attempts,
                started_at=recovery.started_at,
                next_at=now + timedelta(seconds=self.config.recheck_seconds),
            )
        log.info(
            "policy.spot_recreate",
            instance_id=instance.id,
            replacement_id=created.instance.id,
            attempts=attempts,
            regions=list(spec.regions),
        )
        return 1

    async def _give_up(
        self,
        instance: Instance,
        policy: InterruptionPolicy,
        recovery: _Recovery,
        reason: str,
        last_error: dict[str, Any] | None,
    ) -> None:
        detail = {
            **_policy_detail(policy),
            "attempts": recovery.attempts,
            "startedAt": iso(recovery.started_at),
            "lastError": last_error,
        }
        async with self._db.transaction() as conn:
            await repo.change_status(
                conn,
                instance.id,
                Status.FAILED,
                source=EventSource.POLICY,
                now=self._clock.now(),
                reason=reason,
                detail=detail,
            )
        log.warning(
            "policy.spot_recovery_exhausted",
            instance_id=instance.id,
            reason=reason,
            attempts=recovery.attempts,
        )

    async def _postpone(self, instance: Instance, until: datetime) -> None:
        async with self._db.transaction() as conn:
            await policy_db.postpone(conn, instance.id, until=until)


def _policy_detail(policy: InterruptionPolicy) -> dict[str, Any]:
    return {
        "action": policy.action,
        "maxAttempts": policy.max_attempts,
        "maxMinutes": policy.max_minutes,
    }
