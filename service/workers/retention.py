"""Retention: rows kept only for a while are deleted once they are old enough.

- Notifications (`outbox`, with their `outbox_attempts` and `outbox_redeliveries`):
  delivered ones (and cancelled or targetless ones) `NOTIFICATION_RETENTION_DAYS` after
  they settled; dead letters (`failed`) `DEAD_NOTIFICATION_RETENTION_DAYS` after they
  failed, longer by default, because someone still has to look at them and may redeliver
  them. Pending notifications are never deleted.
- Inbound webhooks (`inbound_webhooks`): processed ones `INBOX_RETENTION_DAYS` after they
  arrived (senders retry for 3 days: a duplicate inside that time is still recognised).
  Unprocessed ones are never deleted.

Every `interval` the process holding the `retention` lease (`service.db.leases`) deletes
old rows in batches of `batch_size`, one short transaction each, until none is left;
every other process finds the lease taken and waits for the next interval. A leader that
dies stops renewing, and the lease passes on after `lease_ttl`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock
from service.db import inbox, leases
from service.db.engine import Database
from service.db.notification_retention import prune_settled
from service.notifications.models import NotificationStatus
from service.resources import Resources
from service.settings import Settings
from service.workers.loop import Figures, WorkerLoop

log = structlog.get_logger(__name__)

LEASE_NAME = "retention"
SETTLED = (
    NotificationStatus.DELIVERED.value,
    NotificationStatus.CANCELLED.value,
    NotificationStatus.NO_TARGET.value,
)
DEAD = (NotificationStatus.FAILED.value,)

# Deletes up to `limit` rows older than the cut-off; returns how many.
Pruner = Callable[[AsyncConnection, datetime, int], Awaitable[int]]


async def _settled_notifications(conn: AsyncConnection, before: datetime, limit: int) -> int:
    return await prune_settled(conn, statuses=SETTLED, settled_before=before, limit=limit)


async def _dead_letters(conn: AsyncConnection, before: datetime, limit: int) -> int:
    return await prune_settled(conn, statuses=DEAD, settled_before=before, limit=limit)


async def _processed_webhooks(conn: AsyncConnection, before: datetime, limit: int) -> int:
    return await inbox.prune(conn, received_before=before, limit=limit)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    settled_days: float = 30.0
    dead_days: float = 90.0
    inbox_days: float = 4.0
    interval: float = 600.0  # seconds between sweeps
    batch_size: int = 500  # rows deleted per transaction

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionConfig:
        return cls(
            settled_days=settings.notification_retention_days,
            dead_days=settings.dead_notification_retention_days,
            inbox_days=settings.inbox_retention_days,
        )

    @property
    def lease_ttl(self) -> float:
        # Longer than the interval, so the leader keeps the lease from sweep to sweep.
        return 2 * self.interval


class Retention:
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
        self._kinds: tuple[tuple[str, Pruner, float], ...] = (
            ("notifications", _settled_notifications, self.config.settled_days),
            ("dead_letters", _dead_letters, self.config.dead_days),
            ("inbound_webhooks", _processed_webhooks, self.config.inbox_days),
        )

    @classmethod
    def from_resources(cls, resources: Resources) -> Retention:
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
        pruned: dict[str, int] = {}
        room = self.config.batch_size
        for kind, prune, days in self._kinds:
            async with self._db.transaction() as conn:
                pruned[kind] = await prune(conn, now - timedelta(days=days), room)
            room -= pruned[kind]
            if room == 0:
                break
        total = sum(pruned.values())
        self.pruned_total += total
        if total:
            log.info("retention.pruned", **{k: n for k, n in pruned.items() if n})
        if room:  # nothing older is left: done until the next sweep
            self._next_sweep_at = now + timedelta(seconds=self.config.interval)
        return total


def build_retention_loop(resources: Resources) -> WorkerLoop:
    return WorkerLoop(Retention.from_resources(resources), idle_interval=60.0)
