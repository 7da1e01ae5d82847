"""The full relist against the simulator, on SQLite and PostgreSQL: convergence without
webhooks or polls, adoption of orphans, foreign instances left alone, lost instances,
the cost of a sweep in list calls, and pausing while the breaker is open."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db.engine import Database
from service.domain import EventSource, Status, new_instance_id
from service.novita import CircuitBreaker, CreateInstanceRequest, NovitaClient
from service.provisioning.naming import provider_name
from service.simulator import Simulator
from service.workers.loop import WorkerLoop
from service.workers.provisioner import Provisioner
from service.workers.reconciler import Reconciler
from service.workers.relister import RelistConfig, Relister
from tests.plugins.simulator import SimulatorFactory
from tests.support.provisioning import (
    add_instance,
    advance,
    api_moves,
    events,
    load,
    make_client,
    make_reconciler,
)

LIST_PATH = "/gpu/instances"
GET_PATH = "/gpu/instance"


def make_relister(
    database: Database,
    novita: NovitaClient,
    clock: ManualClock,
    owner: str = "relist-1",
    **config: object,
) -> Relister:
    return Relister(
        database=database,
        novita=novita,
        clock=clock,
        owner=owner,
        config=RelistConfig(**config),  # type: ignore[arg-type]
    )


@pytest.fixture
def relister(database: Database, novita: NovitaClient, sim_clock: ManualClock) -> Relister:
    return make_relister(database, novita, sim_clock)


async def provisioned(
    database: Database, clock: ManualClock, provisioner: Provisioner, count: int = 1
) -> list[tuple[str, str]]:
    ids = [await add_instance(database, clock) for _ in range(count)]
    while await provisioner.run_once():
        pass
    pairs = []
    for instance_id in ids:
        instance = await load(database, instance_id)
        assert instance.novita_instance_id is not None
        pairs.append((instance_id, instance.novita_instance_id))
    return pairs


def create_request(name: str) -> CreateInstanceRequest:
    return CreateInstanceRequest(
        name=name,
        product_id="4090.16c62g",
        gpu_num=1,
        rootfs_size=60,
        image_url="pytorch/pytorch:latest",
        ports="8888/http",
        cluster_id="as-sgp-2",
        billing_mode="onDemand",
    )


async def test_without_webhooks_or_polls_one_sweep_converges_every_instance(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    relister: Relister,
) -> None:
    """No push and no per-instance poll: a single sweep brings every record to what Novita
    says, each with one event per step."""
    pairs = await provisioned(database, sim_clock, provisioner, count=4)
    await advance(simulator, sim_clock, 20)  # all run at Novita; nobody told us
    assert all(simulator.instance(n)["status"] == "running" for _, n in pairs)  # type: ignore[index]

    await relister.run_once()

    for instance_id, _ in pairs:
        instance = await load(database, instance_id)
        assert (instance.status, instance.provider_status) == (Status.RUNNING, "running")
        assert instance.port_mappings and all(m["endpoint"] for m in instance.port_mappings)
        history = await events(database, instance_id)
        repaired = [(e.source, e.kind) for e in history if e.to_status is Status.RUNNING]
        assert repaired == [(EventSource.RECONCILER, "status_changed")]
    assert relister.last_successful_sweep_at == sim_clock.now()
    assert relister.is_leader and not relister.paused


async def test_a_change_neither_pushed_nor_polled_is_caught_by_the_relist(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    relister: Relister,
) -> None:
    [(instance_id, novita_id)] = await provisioned(database, sim_clock, provisioner)
    reconciler = make_reconciler(database, novita, sim_clock, slow_interval=3600)
    await advance(simulator, sim_clock, 20)
    await reconciler.run_once()
    running = await load(database, instance_id)
    assert running.status is Status.RUNNING
    assert running.next_check_at is not None and running.next_check_at > sim_clock.now()

    simulator.set_status(novita_id, "exited", hold=True)  # stopped behind our back
    sim_clock.advance(5)
    assert await reconciler.run_once() == 0, "no poll is due for an hour"
    await relister.run_once()

    stopped = await load(database, instance_id)
    assert (stopped.status, stopped.provider_status) == (Status.STOPPED, "exited")
    assert stopped.port_mappings == ()
    last = (await events(database, instance_id))[-1]
    assert (last.source, last.to_status) == (EventSource.RECONCILER, Status.STOPPED)

    before = await events(database, instance_id)
    sim_clock.advance(300)
    await relister.run_once()
    assert await events(database, instance_id) == before, "an unchanged instance writes nothing"


async def test_an_instance_with_our_id_but_no_row_is_adopted(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    relister: Relister,
) -> None:
    orphan_id = new_instance_id()
    novita_id = await novita.create_instance(create_request(provider_name(orphan_id, "lost job")))
    await advance(simulator, sim_clock, 10)

    with capture_logs() as logs:
        await relister.run_once()

    adopted = await load(database, orphan_id)
    assert adopted.novita_instance_id == novita_id
    assert adopted.status is Status.RUNNING
    assert adopted.name == "lost-job"
    assert (adopted.product_id, adopted.region, adopted.gpu_num) == ("4090.16c62g", "AS-SGP-02", 1)
    assert adopted.billing_mode == "onDemand"
    assert adopted.labels == {"adopted": "true"}
    history = [(e.kind, e.to_status, e.source) for e in await events(database, orphan_id)]
    assert history == [
        ("created", Status.PENDING, EventSource.RECONCILER),
        ("adopted", Status.PROVISIONING, EventSource.RECONCILER),
        ("status_changed", Status.RUNNING, EventSource.RECONCILER),
    ]
    assert relister.adopted_total == 1
    assert "reconcile.instance_adopted" in {e["event"] for e in logs}

    sim_clock.advance(300)
    await relister.run_once()
    assert len(await events(database, orphan_id)) == 3, "adopted once"


async def test_a_foreign_instance_is_reported_and_never_touched(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    relister: Relister,
) -> None:
    foreign_id = await novita.create_instance(create_request("someone-elses-notebook"))
    await advance(simulator, sim_clock, 10)
    requests_before = dict(simulator.requests_by_path)

    with capture_logs() as logs:
        await relister.run_once()

    assert relister.foreign_instances == 1
    foreign_logs = [e for e in logs if e["event"] == "reconcile.foreign_instance"]
    assert [e["novita_instance_id"] for e in foreign_logs] == [foreign_id]
    sim_instance = simulator.instance(foreign_id)
    assert sim_instance is not None and sim_instance.status == "running"
    touched = {
        path
        for path, count in simulator.requests_by_path.items()
        if count != requests_before.get(path, 0)
    }
    assert touched == {LIST_PATH}, "only listed: never stopped, deleted or even read"
    async with database.read() as conn:
        from service.db.repository import find_instance

        assert await find_instance(conn, foreign_id) is None


async def test_foreign_instances_are_logged_once_within_a_bounded_memory(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    """Each foreign instance is logged at its first sweep only, while at most
    `foreign_remembered` of them are remembered: with more, the least recently seen are
    forgotten (and logged again when next seen) instead of memory growing."""
    foreign = [await novita.create_instance(create_request(f"theirs-{n}")) for n in range(3)]
    await advance(simulator, sim_clock, 10)
    remembering_all = make_relister(database, novita, sim_clock, foreign_remembered=3)
    # The same owner: a second process would wait for the first one's lease.
    remembering_two = make_relister(database, novita, sim_clock, foreign_remembered=2)

    for relister in (remembering_all, remembering_two):
        with capture_logs() as logs:
            await relister.run_once()
        logged = [e for e in logs if e["event"] == "reconcile.foreign_instance"]
        assert sorted(e["novita_instance_id"] for e in logged) == sorted(foreign)
        assert len(relister._reported_foreign) == min(3, relister.config.foreign_remembered)

    sim_clock.advance(300)
    with capture_logs() as logs:
        await remembering_all.run_once()
    assert remembering_all.foreign_instances == 3
    assert "reconcile.foreign_instance" not in {e["event"] for e in logs}, "logged once"


async def test_missing_instances_are_lost_and_missing_deletes_are_confirmed(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    relister: Relister,
) -> None:
    [(lost_id, lost_novita), (deleting_id, deleting_novita), (kept_id, _)] = await provisioned(
        database, sim_clock, provisioner, count=3
    )
    await advance(simulator, sim_clock, 20)
    await novita.delete_instance(lost_novita)  # behind our back
    await novita.delete_instance(deleting_novita)
    await api_moves(database, sim_clock, deleting_id, Status.DELETING)  # ours, unconfirmed
    await advance(simulator, sim_clock, 60)  # removed, then gone from the list
    assert simulator.instance(lost_novita) is None and simulator.instance(deleting_novita) is None
    fresh_id = await add_instance(database, sim_clock)  # pending: no Novita id, never lost

    await relister.run_once()

    lost = await load(database, lost_id)
    assert (lost.status, lost.status_reason) == (Status.FAILED, "lost")
    assert (await events(database, lost_id))[-1].detail == {"notFound": True}
    assert (await load(database, deleting_id)).status is Status.DELETED
    assert (await load(database, kept_id)).status is Status.RUNNING
    assert (await load(database, fresh_id)).status is Status.PENDING
    assert relister.lost_total == 1
    assert simulator.requests_by_path[GET_PATH] == 2, "each absence was confirmed by a read"


async def test_an_instance_submitted_after_the_sweep_began_is_not_called_lost(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    relister: Relister,
) -> None:
    [(instance_id, novita_id)] = await provisioned(database, sim_clock, provisioner)
    simulator.set_status(novita_id, "removed", hold=True)
    sim_clock.advance(60)
    await simulator.tick()  # gone at Novita
    async with database.transaction() as conn:
        from service.db.models import instances

        # As if its create landed while the sweep was listing.
        await conn.execute(
            instances.update()
            .where(instances.c.id == instance_id)
            .values(submitted_at=sim_clock.now() + timedelta(seconds=1))
        )
    await relister.run_once()
    assert (await load(database, instance_id)).status is Status.PROVISIONING


@pytest.mark.parametrize(("count", "page_size"), [(1, 100), (250, 100), (200, 100), (37, 10)])
async def test_a_full_relist_costs_one_list_call_per_page(
    database: Database,
    simulator_factory: SimulatorFactory,
    sim_clock: ManualClock,
    sim_api_key: str,
    count: int,
    page_size: int,
) -> None:
    simulator = await simulator_factory(capacity_on_demand=1000)
    # The client's rate limiter waits in real time: lift it for the set-up creates.
    unlimited = NovitaClient(
        simulator.base_url, sim_api_key, clock=sim_clock, rate_limit_per_minute=100_000
    )
    async with unlimited as novita:
        for n in range(count):
            await novita.create_instance(create_request(f"bench-{n}"))
        relister = make_relister(database, novita, sim_clock, page_size=page_size)
        simulator.requests_by_path.clear()

        assert await relister.run_once() == count

    assert simulator.requests_by_path[LIST_PATH] == math.ceil(count / page_size)
    assert relister.foreign_instances == count
    assert relister.last_sweep_seconds is not None


async def test_an_open_breaker_pauses_the_relist(
    database: Database, simulator: Simulator, sim_clock: ManualClock, sim_api_key: str
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, clock=sim_clock)
    async with make_client(simulator, sim_api_key, sim_clock, breaker=breaker) as client:
        relister = make_relister(database, client, sim_clock)
        simulator.faults.error_rate = 1.0
        with capture_logs() as logs:
            await relister.run_once()  # fails: the breaker opens
            await relister.run_once()
        assert relister.paused
        assert "reconcile.relist_paused" in {e["event"] for e in logs}
        assert relister.last_successful_sweep_at is None
        simulator.faults.error_rate = 0.0
        calls = simulator.request_count
        sim_clock.advance(30)
        assert await relister.run_once() == 0
        assert simulator.request_count == calls, "no calls while the breaker is open"

        sim_clock.advance(31)
        await relister.run_once()
        assert not relister.paused
        assert relister.last_successful_sweep_at == sim_clock.now()


async def test_sweeps_follow_the_interval(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    relister = make_relister(database, novita, sim_clock, interval=300)
    await relister.run_once()
    sim_clock.advance(299)
    await relister.run_once()
    assert relister.sweeps == 1
    sim_clock.advance(1)
    await relister.run_once()
    assert relister.sweeps == 2


async def test_the_relist_and_a_poll_agree_on_the_same_answer(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    relister: Relister,
) -> None:
    """Both apply a read through one function: a requested stop that Novita has not applied
    yet is not undone by the relist either (within the settle window)."""
    [(instance_id, _)] = await provisioned(database, sim_clock, provisioner)
    reconciler: Reconciler = make_reconciler(database, novita, sim_clock)
    await advance(simulator, sim_clock, 20)
    await reconciler.run_once()
    await api_moves(database, sim_clock, instance_id, Status.STOPPING)
    await relister.run_once()
    assert (await load(database, instance_id)).status is Status.STOPPING


@contextlib.asynccontextmanager
async def paced_relister(
    database: Database,
    simulator_factory: SimulatorFactory,
    sim_clock: ManualClock,
    sim_api_key: str,
    *,
    interval: float,
) -> AsyncIterator[tuple[Simulator, Relister]]:
    """37 instances at Novita, a relister reading pages of 10 spread over 80 % of
    `interval`, its first sweep done (it had nothing of ours to count the pages by): the
    next one takes 4 pages, `interval` / 5 apart."""
    simulator = await simulator_factory(capacity_on_demand=1000)
    unlimited = NovitaClient(
        simulator.base_url, sim_api_key, clock=sim_clock, rate_limit_per_minute=100_000
    )
    async with unlimited as novita:
        for n in range(37):
            await novita.create_instance(create_request(f"paced-{n}"))
        relister = make_relister(
            database, novita, sim_clock, page_size=10, interval=interval, spread=0.8
        )
        await relister.sweep()
        yield simulator, relister


async def test_a_sweep_spreads_its_pages_over_its_interval(
    database: Database,
    simulator_factory: SimulatorFactory,
    sim_clock: ManualClock,
    sim_api_key: str,
) -> None:
    async with paced_relister(
        database, simulator_factory, sim_clock, sim_api_key, interval=0.5
    ) as (_, relister):
        started = time.perf_counter()
        await relister.sweep()  # 4 pages over 80 % of 0.5 s: 0.1 s between pages
        second = time.perf_counter() - started
    # A lower bound only: the pages waited for their turn, however fast the machine.
    assert second >= 0.3
    assert relister.sweeps == 2


async def test_stopping_its_loop_ends_a_paced_sweep_at_the_next_page(
    database: Database,
    simulator_factory: SimulatorFactory,
    sim_clock: ManualClock,
    sim_api_key: str,
) -> None:
    """A paced sweep lasts most of its interval: a shutdown must not wait for it."""
    async with paced_relister(
        database, simulator_factory, sim_clock, sim_api_key, interval=600
    ) as (simulator, relister):
        # The next sweep: 4 pages over 80 % of 600 s, 120 s between two pages.
        loop = WorkerLoop(relister, idle_interval=5.0, on_stop=relister.interrupt)
        simulator.requests_by_path.clear()
        running = asyncio.create_task(loop.run())
        for _ in range(200):  # until its first page is asked for
            if simulator.requests_by_path:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # then into its wait for the next page
        loop.stop()
        await asyncio.wait_for(running, timeout=10)  # not the 120 s to the next page
    assert relister.sweeps == 1  # the cut sweep is not counted as complete
