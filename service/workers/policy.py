"""The policy worker: idle auto-stop and spot-interruption recovery, one pass of each.

Both act through `Lifecycle` and the single state-change function, with source `policy`,
and hold a policy claim on each instance they act on (`service.db.policy`), so several
processes sharing a database never act on one instance twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from service.clock import Clock
from service.db.engine import Database
from service.lifecycle import Lifecycle
from service.policies.idle import IdleDefaults
from service.policies.interruption import InterruptionDefaults
from service.resources import Resources
from service.settings import Settings
from service.workers.idle_stop import IdleStopConfig, IdleStopper
from service.workers.loop import Figures, WorkerLoop
from service.workers.spot_recovery import SpotRecovery, SpotRecoveryConfig


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    idle: IdleStopConfig = field(default_factory=IdleStopConfig)
    spot: SpotRecoveryConfig = field(default_factory=SpotRecoveryConfig)

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyConfig:
        return cls(
            idle=IdleStopConfig(
                defaults=IdleDefaults(
                    idle_minutes=settings.auto_stop_idle_minutes,
                    action=settings.auto_stop_action,
                    grace_minutes=settings.auto_stop_grace_minutes,
                ),
                dry_run=settings.auto_stop_dry_run,
                claim_ttl=settings.claim_ttl_seconds,
            ),
            spot=SpotRecoveryConfig(
                defaults=InterruptionDefaults(
                    action=settings.spot_interruption_action,
                    max_attempts=settings.spot_recovery_max_attempts,
                    max_minutes=settings.spot_recovery_max_minutes,
                    backoff_seconds=settings.spot_recovery_backoff_seconds,
                ),
                claim_ttl=settings.claim_ttl_seconds,
                recheck_seconds=settings.policy_interval,
            ),
        )


class PolicyWorker:
    name = "policy"

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        database: Database,
        clock: Clock,
        owner: str,
        config: PolicyConfig | None = None,
    ) -> None:
        if not owner:
            raise ValueError("a policy worker needs an owner id for its claims")
        config = config or PolicyConfig()
        self.idle = IdleStopper(
            lifecycle, database=database, clock=clock, owner=owner, config=config.idle
        )
        self.spot = SpotRecovery(
            lifecycle, database=database, clock=clock, owner=owner, config=config.spot
        )

    @classmethod
    def from_resources(cls, resources: Resources) -> PolicyWorker:
        return cls(
            Lifecycle(resources),
            database=resources.database,
            clock=resources.clock,
            owner=resources.owner,
            config=PolicyConfig.from_settings(resources.settings),
        )

    def figures(self, now: datetime) -> Figures:
        return {}

    async def run_once(self) -> int:
        return await self.idle.run_once() + await self.spot.run_once()


def build_policy_loop(resources: Resources) -> WorkerLoop:
    return WorkerLoop(
        PolicyWorker.from_resources(resources),
        idle_interval=resources.settings.policy_interval,
    )
