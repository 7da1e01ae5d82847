"""Notification retention: settled notifications are deleted once they are old enough.

`outbox` and `outbox_attempts` grow with every status change and every delivery attempt.
Delivered notifications (and cancelled or targetless ones) are kept
`NOTIFICATION_RETENTION_DAYS` after they settled; dead letters (`failed`) are kept
`DEAD_NOTIFICATION_RETENTION_DAYS`, longer by default, because someone still has to look at
them and may redeliver them. Pending notifications are never deleted.

Every `interval` the process holding the `notification-retention` lease
(`service.db.leases`) deletes old rows in batches of `batch_size`, one short transaction
each, until none is left; every other process finds the lease taken and waits for the next
interval. A leader that dies stops renewing, and the lease passes on after `lease_ttl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from service.clock import Clock
from service.db import leases
from service.db.engine import Database
from service.db.notification_retention import prune_settled
from service.notifications.models import NotificationStatus
from service.resources import Resources
from service.settings import Settings
from service.workers.loop import Figures, WorkerLoop

log = structlog.get_logger(__name__)

LEASE_NAME = "notification-retention"
SETTLED = (
    NotificationStatus.DELIVERED.value,
    NotificationStatus.CANCELLED.value,
    NotificationStatus.NO_TARGET.value,
)
DEAD = (NotificationStatus.FAILED.value,)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    settled_days: float = 30.0
    dead_days: float = 90.0
    interval: float = 600.0  # seconds between sweeps
    batch_size: int = 500  # rows deleted per transaction

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionConfig:
        return cls(
            settled_days=settings.notification_retention_days,
            dead_days=settings.dead_notification_retention_days,
        )

    @property
    def lease_ttl(self) -> float:
        # Longer than the interval, so the leader keeps the lease from sweep to sweep.
        return 2 * self.interval


class NotificationRetention:
    name = "retention"

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        owner: str,
        config: RetentionConfig | None = None,
    ) -> None:
        if not owner:
            raise ValueError("the retention worker needs an owner id for its lease")
        self._db = database
        self._clock = clock
        self.owner = owner
        self.config = config or RetentionConfig()
        self.pruned_total = 0
        self._next_sweep_at: datetime | None = None  # None: at once

    @classmethod
    def from_resources(cls, resources: Resources) -> NotificationRetention:
        return cls(
            database=resources.database,
            clock=resources.clock,
            owner=resources.owner,
            config=RetentionConfig.from_settings(resources.settings),
        )

    def figures(self, now: datetime) -> Figures:
        return {}

    async def run_once(self) -> int:
        """One batch when a sweep is due and this process holds the lease; the number of
        rows deleted (a full batch: the loop comes back at once for the next)."""
        now = self._clock.now()
        if self._next_sweep_at is not None and now < self._next_sweep_at:
            return 0
        async with self._db.transaction() as conn:
            leader = await leases.try_acquire(
                conn, LEASE_NAME, self.owner, now, self.config.lease_ttl
            )
        if not leader:
            self._next_sweep_at = now + timedelta(seconds=self.config.interval)
            return 0
        pruned = 0
        for statuses, days in ((SETTLED, self.config.settled_days), (DEAD, self.config.dead_days)):
            limit = self.config.batch_size - pruned
            async with self._db.transaction() as conn:
                pruned += await prune_settled(
                    conn,
                    statuses=statuses,
                    settled_before=now - timedelta(days=days),
                    limit=limit,
                )
            if pruned >= self.config.batch_size:
                break
        self.pruned_total += pruned
        if pruned:
            log.info("retention.notifications_pruned", rows=pruned)
        if pruned < self.config.batch_size:  # nothing older is left: done until next time
            self._next_sweep_at = now + timedelta(seconds=self.config.interval)
        return pruned


def build_retention_loop(resources: Resources) -> WorkerLoop:
    return WorkerLoop(NotificationRetention.from_resources(resources), idle_interval=60.0)
