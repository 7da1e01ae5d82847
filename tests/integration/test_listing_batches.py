"""A listing's changes and a batch of readiness verdicts are each written in one
transaction, on SQLite and PostgreSQL, against the simulator: every row gets its events
and notifications exactly once, one bad row costs only itself, and a listing applied late
(reordered) or never (lost) still ends in the right record."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db import repository as repo
from service.db.engine import NOTIFICATIONS_QUEUED, CommitNotes, Database
from service.db.models import instance_events, instances, outbox
from service.domain import Status
from service.novita import NovitaClient
from service.simulator import Simulator
from service.workers.call_budget import CallBudget
from service.workers.provider_truth import RUNNING_OBSERVED
from service.workers.provisioner import Provisioner
from service.workers.reconciler import Reconciler
from tests.support.provisioning import add_instance, advance, events, load, make_reconciler
from tests.support.readiness import make_readiness

BUDGET = CallBudget(
    per_minute=100, stable_share=0.5, floor=1.0, slow_interval=30.0, relist_interval=300.0
)
COUNT = 6


@pytest.fixture
def reconciler(database: Database, novita: NovitaClient, sim_clock: ManualClock) -> Reconciler:
    return make_reconciler(
        database, novita, sim_clock, fast_interval=5, slow_interval=30, budget=BUDGET
    )


@pytest.fixture
def commits(database: Database) -> list[CommitNotes]:
    """The notes of every commit, as this process's workers are told of them."""
    seen: list[CommitNotes] = []
    database.commit_listeners.append(seen.append)
    return seen


async def submitted(
    database: Database, simulator: Simulator, clock: ManualClock, provisioner: Provisioner
) -> list[str]:
    ids = [await add_instance(database, clock, name=f"b{n}") for n in range(COUNT)]
    while await provisioner.run_once():
        pass
    for instance_id in ids:
        novita_id = (await load(database, instance_id)).novita_instance_id
        assert novita_id is not None
        simulator.set_app_startup_delay(novita_id, 0)  # the app answers once running
    return ids


async def listed_until_running(
    database: Database,
    simulator: Simulator,
    clock: ManualClock,
    reconciler: Reconciler,
    ids: list[str],
) -> None:
    for _ in range(40):
        await advance(simulator, clock, 1.0)
        await reconciler.run_once()
        if {(await load(database, i)).status for i in ids} == {Status.RUNNING}:
            return
    raise AssertionError("never all running")


async def notification_types(database: Database, instance_id: str) -> Counter[str]:
    async with database.read() as conn:
        return Counter(m.type for m in await repo.list_outbox(conn, instance_id=instance_id))


async def test_a_listing_and_the_readiness_verdicts_each_commit_once_for_every_instance(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    commits: list[CommitNotes],
) -> None:
    ids = await submitted(database, simulator, sim_clock, provisioner)
    await listed_until_running(database, simulator, sim_clock, reconciler, ids)
    assert reconciler.by_listing

    # The listing that saw them running recorded all of them in one commit.
    running_commits = [notes[RUNNING_OBSERVED] for notes in commits if RUNNING_OBSERVED in notes]
    assert [sorted(set(c)) for c in running_commits] == [sorted(ids)]

    commits.clear()
    readiness = make_readiness(database, sim_clock)
    assert await readiness.run_once() == COUNT
    queued = [notes[NOTIFICATIONS_QUEUED] for notes in commits if NOTIFICATIONS_QUEUED in notes]
    assert [sorted(c) for c in queued] == [sorted(ids)], "every verdict in one commit"
    assert readiness.ready_total == COUNT

    for instance_id in ids:
        instance = await load(database, instance_id)
        assert instance.status is Status.READY
        assert instance.claim_owner is None
        moves = Counter(e.to_status for e in await events(database, instance_id))
        assert moves[Status.RUNNING] == 1
        assert moves[Status.READY] == 1
        sent = await notification_types(database, instance_id)
        assert sent["instance.running"] == 1
        assert sent["instance.ready"] == 1

    # Listings and probes that follow record nothing more.
    before = {i: len(await events(database, i)) for i in ids}
    await advance(simulator, sim_clock, 5.0)
    await reconciler.run_once()
    assert await readiness.run_once() == 0
    assert {i: len(await events(database, i)) for i in ids} == before


async def test_one_row_that_cannot_be_applied_costs_the_others_nothing(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    ids = await submitted(database, simulator, sim_clock, provisioner)
    await advance(simulator, sim_clock, 10.0)  # running at Novita, not yet seen
    items = {item.id: item async for item in novita.iter_instances()}
    reads = [(i, items[(await load(database, i)).novita_instance_id or ""]) for i in ids]
    # A row that is gone by the time the listing is applied (e.g. purged meanwhile).
    reads.insert(2, ("no-such-instance", reads[0][1]))
    with capture_logs() as logs:
        outcomes = await reconciler.applier.apply_many(reads, sim_clock.now())
    assert "no-such-instance" not in outcomes
    assert [entry["event"] for entry in logs].count("reconcile.batch_apply_failed") == 1
    failed = [entry["instance_id"] for entry in logs if entry["event"] == "reconcile.apply_failed"]
    assert failed == ["no-such-instance"]
    # Applied twice (the batch, rolled back, then each alone), logged once: when committed.
    repaired = Counter(
        entry["instance_id"] for entry in logs if entry["event"] == "reconcile.instance_repaired"
    )
    assert repaired == dict.fromkeys(ids, 1)
    for instance_id in ids:
        assert outcomes[instance_id].status is Status.RUNNING
        assert (await load(database, instance_id)).status is Status.RUNNING
        assert (await notification_types(database, instance_id))["instance.running"] == 1


async def test_a_listing_applied_late_or_never_still_ends_in_the_right_record(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    ids = await submitted(database, simulator, sim_clock, provisioner)
    await advance(simulator, sim_clock, 4.0)
    early_at = sim_clock.now()
    early = {item.id: item async for item in novita.iter_instances()}  # still provisioning
    await advance(simulator, sim_clock, 6.0)
    # A listing in between is lost (never applied); the newest one is applied first.
    await novita.list_instances()  # (its answer never applied)
    late = {item.id: item async for item in novita.iter_instances()}
    novita_ids = {i: (await load(database, i)).novita_instance_id or "" for i in ids}
    await reconciler.applier.apply_many([(i, late[novita_ids[i]]) for i in ids], sim_clock.now())
    recorded = {i: len(await events(database, i)) for i in ids}

    # The older listing arrives late: stale, nothing recorded, nothing moves back.
    outcomes = await reconciler.applier.apply_many(
        [(i, early[novita_ids[i]]) for i in ids], early_at - timedelta(seconds=1)
    )
    assert not any(outcome.changed for outcome in outcomes.values())
    for instance_id in ids:
        assert (await load(database, instance_id)).status is Status.RUNNING
        assert len(await events(database, instance_id)) == recorded[instance_id]
        assert (await notification_types(database, instance_id))["instance.running"] == 1


async def test_a_verdict_that_cannot_be_recorded_costs_the_others_nothing(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    """One instance of the batch is purged while its app is being probed: the batch's
    transaction fails on it, and every other verdict is still recorded, once."""
    ids = await submitted(database, simulator, sim_clock, provisioner)
    await listed_until_running(database, simulator, sim_clock, reconciler, ids)
    gone = ids[2]

    async def purge_while_probed(request: web.Request) -> web.Response:
        async with database.transaction() as conn:
            for table, column in (
                (outbox, outbox.c.instance_id),
                (instance_events, instance_events.c.instance_id),
                (instances, instances.c.id),
            ):
                await conn.execute(table.delete().where(column == gone))
        return web.Response(text="up")

    app = web.Application()
    app.router.add_get("/", purge_while_probed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
        mappings = [
            {**m, "endpoint": endpoint} for m in (await load(database, gone)).port_mappings
        ]
        async with database.transaction() as conn:
            await conn.execute(
                instances.update().where(instances.c.id == gone).values(port_mappings=mappings)
            )
        readiness = make_readiness(database, sim_clock)
        with capture_logs() as logs:
            assert await readiness.run_once() == COUNT
    finally:
        await runner.cleanup()

    events_logged = [e["event"] for e in logs]
    assert events_logged.count("readiness.batch_record_failed") == 1, "one try for the batch"
    failed = [e.get("instance_id") for e in logs if e["event"] == "readiness.record_failed"]
    assert failed == [gone]
    assert readiness.ready_total == COUNT - 1
    for instance_id in ids:
        if instance_id == gone:
            continue
        assert (await load(database, instance_id)).status is Status.READY
        moves = Counter(e.to_status for e in await events(database, instance_id))
        assert moves[Status.READY] == 1
        assert (await notification_types(database, instance_id))["instance.ready"] == 1
