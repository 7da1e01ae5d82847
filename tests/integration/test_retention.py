"""Retention on SQLite and PostgreSQL: settled notifications older than their retention go
(with their attempts and redeliveries), and processed inbound webhooks older than theirs,
in bounded batches, by one process at a time; pending, recent and dead-within-window
notifications and unprocessed webhooks stay, and reports over the retained period read
the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from service.clock import ManualClock
from service.db import inbox
from service.db import repository as repo
from service.db.engine import Database
from service.db.inbox import InboxRecord
from service.db.models import inbound_webhooks, outbox, outbox_attempts, outbox_redeliveries
from service.db.outbox import redeliver_notification
from service.db.reports import Window, notification_summary
from service.domain import InstanceSpec
from service.workers.retention import Retention, RetentionConfig

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def notification(
    database: Database, status: str, settled: datetime, *, created: datetime | None = None
) -> str:
    """A notification (the `instance.created` one of a new instance) in `status`, last
    changed at `settled`, with one delivery attempt on record."""
    created = created or settled - timedelta(minutes=5)
    async with database.transaction() as conn:
        result = await repo.insert_instance(
            conn,
            InstanceSpec(name="n", product_name="RTX 4090 24GB", template_id="212"),
            now=created,
        )
        message_id = (
            await conn.execute(
                sa.select(outbox.c.id).where(outbox.c.instance_id == result.instance.id)
            )
        ).scalar_one()
        await conn.execute(
            outbox.update()
            .where(outbox.c.id == message_id)
            .values(
                status=status,
                updated_at=settled,
                delivered_at=settled if status == "delivered" else None,
                attempts=1,
            )
        )
        await conn.execute(
            outbox_attempts.insert().values(
                outbox_id=message_id,
                number=1,
                started_at=created,
                duration_ms=12,
                target_url="https://hooks.example.com/x",
                outcome="delivered" if status == "delivered" else "failed",
                owner="test",
            )
        )
    return str(message_id)


async def remaining(database: Database) -> set[str]:
    async with database.read() as conn:
        return set((await conn.execute(sa.select(outbox.c.id))).scalars())


async def orphans(database: Database) -> int:
    """Attempts and redeliveries whose notification is gone (there must be none)."""
    async with database.read() as conn:
        known = sa.select(outbox.c.id)
        attempts = await conn.scalar(
            sa.select(sa.func.count()).where(outbox_attempts.c.outbox_id.not_in(known))
        )
        redeliveries = await conn.scalar(
            sa.select(sa.func.count()).where(outbox_redeliveries.c.outbox_id.not_in(known))
        )
    return int(attempts or 0) + int(redeliveries or 0)


def worker(
    database: Database, clock: ManualClock, owner: str = "a", **config: Any
) -> Retention:
    return Retention(
        database=database, clock=clock, owner=owner, config=RetentionConfig(**config)
    )


async def test_old_settled_notifications_go_and_the_rest_stay(database: Database) -> None:
    old_delivered = await notification(database, "delivered", NOW - 31 * DAY)
    old_cancelled = await notification(database, "cancelled", NOW - 31 * DAY)
    old_targetless = await notification(database, "no_target", NOW - 31 * DAY)
    recent_delivered = await notification(database, "delivered", NOW - 29 * DAY)
    old_pending = await notification(database, "pending", NOW - 200 * DAY)
    dead_in_window = await notification(database, "failed", NOW - 60 * DAY)
    dead_long_ago = await notification(database, "failed", NOW - 91 * DAY)
    async with database.transaction() as conn:  # a redelivery that failed again, long ago
        await redeliver_notification(conn, dead_long_ago, now=NOW - 92 * DAY)
        await conn.execute(
            outbox.update()
            .where(outbox.c.id == dead_long_ago)
            .values(status="failed", updated_at=NOW - 91 * DAY)
        )
    # A report over the retained period, before the sweep.
    window = Window(since=NOW - 29 * DAY - timedelta(hours=1), until=NOW)
    async with database.read() as conn:
        report_before = await notification_summary(conn, window, [0.5, 0.95])

    pruned = await worker(database, ManualClock(NOW)).run_once()

    assert pruned == 4
    assert await remaining(database) == {
        recent_delivered,
        old_pending,
        dead_in_window,
    }
    assert {old_delivered, old_cancelled, old_targetless, dead_long_ago}.isdisjoint(
        await remaining(database)
    )
    assert await orphans(database) == 0, "attempts and redeliveries go with their rows"
    async with database.read() as conn:
        assert await notification_summary(conn, window, [0.5, 0.95]) == report_before
    assert report_before[0] == {"delivered": 1}


async def test_a_redelivered_notification_is_pending_again_and_kept(database: Database) -> None:
    dead = await notification(database, "failed", NOW - 91 * DAY)
    async with database.transaction() as conn:
        await redeliver_notification(conn, dead, now=NOW)
    assert await worker(database, ManualClock(NOW)).run_once() == 0
    assert await remaining(database) == {dead}


async def test_pruning_goes_in_bounded_batches_then_waits_for_the_interval(
    database: Database,
) -> None:
    old = {await notification(database, "delivered", NOW - 40 * DAY) for _ in range(5)}
    clock = ManualClock(NOW)
    retention = worker(database, clock, batch_size=2, interval=600)

    assert [await retention.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert not old & await remaining(database)
    assert retention.pruned_total == 5

    later = await notification(database, "delivered", NOW - 40 * DAY)
    assert await retention.run_once() == 0, "the next sweep is an interval away"
    clock.advance(600)
    assert await retention.run_once() == 1
    assert later not in await remaining(database)


async def test_one_process_at_a_time_prunes(database: Database) -> None:
    clock = ManualClock(NOW)
    first, second = worker(database, clock, "a"), worker(database, clock, "b")
    await notification(database, "delivered", NOW - 40 * DAY)

    assert await first.run_once() == 1
    await notification(database, "delivered", NOW - 40 * DAY)
    assert await second.run_once() == 0, "the lease is the first process's"
    assert len(await remaining(database)) == 1

    clock.advance(2 * 600)  # the first process is gone: its lease expires
    assert await second.run_once() == 1
    assert await remaining(database) == set()


async def webhook(database: Database, received: datetime, *, processed: bool) -> str:
    webhook_id = f"msg_{received.timestamp():.0f}_{processed}"
    record = InboxRecord(webhook_id, "instance.status_changed", "nv-1", '{"type": "x"}')
    async with database.transaction() as conn:
        await inbox.store_batch(conn, [record], now=received)
        if processed:
            row_id = await conn.scalar(
                sa.select(inbound_webhooks.c.id).where(
                    inbound_webhooks.c.webhook_id == webhook_id
                )
            )
            outcomes = {int(row_id): "unknown_instance"}
            await conn.run_sync(lambda sync: inbox.mark(sync, outcomes, now=received))
    return webhook_id


async def test_processed_webhooks_go_after_their_retention_unprocessed_ones_stay(
    database: Database,
) -> None:
    old_processed = await webhook(database, NOW - 5 * DAY, processed=True)
    old_unprocessed = await webhook(database, NOW - 5 * DAY - timedelta(hours=1), processed=False)
    recent_processed = await webhook(database, NOW - 3 * DAY, processed=True)

    assert await worker(database, ManualClock(NOW), inbox_days=4).run_once() == 1

    async with database.read() as conn:
        kept = set((await conn.scalars(sa.select(inbound_webhooks.c.webhook_id))).all())
    assert kept == {old_unprocessed, recent_processed}
    assert old_processed not in kept
