"""One rule for provider truth (docs/architecture.md, Observe): webhooks, polls and the
relist apply what Novita said through `apply_observation`, and what outlives one iteration
(the settle window of an action, a row's poll backoff) is read from the database, so a
restarted or second process sees the same thing."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from service.clock import ManualClock
from service.db import inbox
from service.db.engine import Database
from service.db.inbox import InboxRecord
from service.db.models import inbound_webhooks
from service.domain import Status
from service.novita import NovitaClient
from service.simulator import Simulator
from service.workers.applier import InboxApplier
from service.workers.provisioner import Provisioner
from tests.support.provisioning import (
    add_instance,
    advance,
    api_moves,
    load,
    make_reconciler,
)

SETTLE = 30


async def running_instance(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    novita: NovitaClient,
) -> tuple[str, str]:
    instance_id = await add_instance(database, sim_clock)
    await provisioner.run_once()
    reconciler = make_reconciler(database, novita, sim_clock, fast_interval=5)
    for _ in range(4):
        await advance(simulator, sim_clock, 5)
        await reconciler.run_once()
    instance = await load(database, instance_id)
    assert instance.status is Status.RUNNING and instance.novita_instance_id is not None
    return instance_id, instance.novita_instance_id


async def webhook(
    database: Database, clock: ManualClock, novita_id: str, status: str, observed: datetime
) -> str:
    """Store one status webhook, apply the inbox, and return the event's outcome."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = {
        "type": "instance.status_changed",
        "timestamp": observed.isoformat(),
        "data": {"instanceId": novita_id, "status": status},
    }
    record = InboxRecord(msg_id, "instance.status_changed", novita_id, json.dumps(body))
    async with database.transaction() as conn:
        await inbox.store_batch(conn, [record], now=clock.now())
    await InboxApplier(database, clock, action_settle=SETTLE).run_once()
    async with database.read() as conn:
        outcome = await conn.scalar(
            sa.select(inbound_webhooks.c.outcome).where(inbound_webhooks.c.webhook_id == msg_id)
        )
    return str(outcome)


async def test_a_contradicted_action_settles_the_same_way_for_webhooks_and_polls(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    novita: NovitaClient,
) -> None:
    """A stop Novita has not applied yet: 'running' is superseded within the window,
    counted from the recorded stop, and Novita's word stands after it, whoever reports."""
    instance_id, novita_id = await running_instance(
        database, simulator, sim_clock, provisioner, novita
    )
    await api_moves(database, sim_clock, instance_id, Status.STOPPING)
    sim_clock.advance(10)
    outcome = await webhook(database, sim_clock, novita_id, "running", sim_clock.now())
    assert outcome == "superseded"
    assert (await load(database, instance_id)).status is Status.STOPPING

    sim_clock.advance(SETTLE)
    assert await webhook(database, sim_clock, novita_id, "running", sim_clock.now()) == "applied"
    assert (await load(database, instance_id)).status is Status.RUNNING

    # The same for a poll by a reconciler that never saw the stop contradicted before
    # (a restart, another process): the window is the database's, not the process's.
    await api_moves(database, sim_clock, instance_id, Status.STOPPING)
    sim_clock.advance(SETTLE + 5)
    fresh = make_reconciler(database, novita, sim_clock, owner="r2", action_settle=SETTLE)
    await fresh.run_once()
    assert (await load(database, instance_id)).status is Status.RUNNING


async def test_an_unknown_status_keeps_the_row_and_is_recorded_as_seen(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    novita: NovitaClient,
) -> None:
    instance_id, novita_id = await running_instance(
        database, simulator, sim_clock, provisioner, novita
    )
    sim_clock.advance(1)
    outcome = await webhook(database, sim_clock, novita_id, "hibernating", sim_clock.now())
    assert outcome == "unrecognised_status"
    instance = await load(database, instance_id)
    assert instance.status is Status.RUNNING
    assert instance.provider_status == "hibernating"


async def test_a_report_as_old_as_the_newest_is_applied_and_an_older_one_is_stale(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    novita: NovitaClient,
) -> None:
    instance_id, novita_id = await running_instance(
        database, simulator, sim_clock, provisioner, novita
    )
    newest = (await load(database, instance_id)).provider_observed_at
    assert newest is not None
    sim_clock.advance(1)
    older = newest - timedelta(seconds=1)
    assert await webhook(database, sim_clock, novita_id, "exited", older) == "stale"
    assert await webhook(database, sim_clock, novita_id, "exited", newest) == "applied"
    assert (await load(database, instance_id)).status is Status.STOPPED


async def test_a_poll_backoff_is_kept_on_the_row_across_reconcilers(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    novita: NovitaClient,
) -> None:
    instance_id = await add_instance(database, sim_clock)
    await provisioner.run_once()
    simulator.faults.error_rate = 1.0
    delays = []
    for owner in ("before-restart", "before-restart", "after-restart"):
        reconciler = make_reconciler(database, novita, sim_clock, owner=owner, fast_interval=5)
        await reconciler.run_once()
        instance = await load(database, instance_id)
        assert instance.next_check_at is not None
        delays.append((instance.next_check_at - sim_clock.now()).total_seconds())
        sim_clock.advance(delays[-1])
    assert delays == [5, 10, 20]
    assert (await load(database, instance_id)).failed_attempts == 3

    simulator.faults.error_rate = 0.0
    await make_reconciler(database, novita, sim_clock, owner="after-restart").run_once()
    assert (await load(database, instance_id)).failed_attempts == 0
