"""Two worker "processes" on one database (each its own `Database`, Novita client and owner,
running concurrently): every instance is handled by one at a time, one relist leader, and
no transition is recorded twice. Both engines; PostgreSQL is the one meant for this."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from service.clock import ManualClock
from service.db.engine import Database
from service.domain import Status
from service.novita import CircuitBreaker, NovitaClient
from service.readiness import Prober
from service.simulator import Simulator
from service.workers.provisioner import Provisioner, ProvisionerConfig
from service.workers.readiness import ReadinessConfig, ReadinessWorker
from service.workers.reconciler import Reconciler, ReconcilerConfig
from service.workers.relister import RelistConfig, Relister
from tests.plugins.database import OpenDatabase
from tests.support.provisioning import ClockSleep, add_instance, events, load

INSTANCES = 8
GET_PATH = "/gpu/instance"
LIST_PATH = "/gpu/instances"
CREATE_PATH = "/gpu/instance/create"


@dataclass
class Process:
    database: Database
    novita: NovitaClient
    provisioner: Provisioner
    reconciler: Reconciler
    relister: Relister
    readiness: ReadinessWorker

    async def round(self, *, relist: bool = True) -> None:
        await self.provisioner.run_once()
        await self.reconciler.run_once()
        if relist:
            await self.relister.run_once()
        await self.readiness.run_once()


async def start_process(
    database: Database, simulator: Simulator, api_key: str, clock: ManualClock, owner: str
) -> Process:
    novita = NovitaClient(
        simulator.base_url,
        api_key,
        clock=clock,
        sleep=ClockSleep(clock),
        rate_limit_per_minute=100_000,
        breaker=CircuitBreaker(failure_threshold=100, clock=clock),
    )
    common = {"database": database, "novita": novita, "clock": clock, "owner": owner}
    return Process(
        database=database,
        novita=novita,
        provisioner=Provisioner(**common, config=ProvisionerConfig()),  # type: ignore[arg-type]
        reconciler=Reconciler(**common, config=ReconcilerConfig()),  # type: ignore[arg-type]
        relister=Relister(**common, config=RelistConfig(interval=60)),  # type: ignore[arg-type]
        readiness=ReadinessWorker(
            database=database,
            clock=clock,
            owner=owner,
            prober=Prober(timeout=2.0, concurrency=8, allow_private=True),
            config=ReadinessConfig(interval=5.0),
        ),
    )


@pytest.fixture
async def processes(
    database: Database,
    simulator: Simulator,
    sim_api_key: str,
    sim_clock: ManualClock,
    open_database: OpenDatabase,
) -> AsyncIterator[tuple[Process, Process]]:
    url = database.engine.url.render_as_string(hide_password=False)
    a = await start_process(open_database(url), simulator, sim_api_key, sim_clock, "process-a")
    b = await start_process(open_database(url), simulator, sim_api_key, sim_clock, "process-b")
    try:
        yield a, b
    finally:
        for process in (a, b):
            await process.novita.close()
            await process.database.close()


async def step(simulator: Simulator, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    await simulator.tick()


async def test_two_processes_share_the_work_without_doing_anything_twice(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    processes: tuple[Process, Process],
) -> None:
    a, b = processes
    ids = [await add_instance(database, sim_clock) for _ in range(INSTANCES)]
    for _ in range(12):
        await asyncio.gather(a.round(), b.round())
        await step(simulator, sim_clock, 5)

    assert simulator.requests_by_path[CREATE_PATH] == INSTANCES, "one create per instance"
    for instance_id in ids:
        assert (await load(database, instance_id)).status is Status.READY
        history = await events(database, instance_id)
        assert [e.seq for e in history] == list(range(1, len(history) + 1))
        statuses = [e.to_status for e in history]
        assert all(x is not y for x, y in itertools.pairwise(statuses)), statuses
        counts = Counter(statuses)
        for status in (Status.PENDING, Status.PROVISIONING, Status.RUNNING, Status.READY):
            assert counts[status] == 1, (status, statuses)

    # One relist leader: the other never swept, and every sweep cost one list call.
    assert {a.relister.is_leader, b.relister.is_leader} == {True, False}
    leader, follower = (a, b) if a.relister.is_leader else (b, a)
    assert follower.relister.sweeps == 0
    assert leader.relister.sweeps >= 1
    assert simulator.requests_by_path[LIST_PATH] == leader.relister.sweeps

    # Every instance due at once, both reconcilers at once: each polled exactly once.
    await step(simulator, sim_clock, 31)
    gets = simulator.requests_by_path[GET_PATH]
    polled = await asyncio.gather(a.reconciler.run_once(), b.reconciler.run_once())
    assert sum(polled) == INSTANCES
    assert simulator.requests_by_path[GET_PATH] - gets == INSTANCES

    # The leader goes away: once its lease expires, the other takes over.
    for _ in range(3):
        await step(simulator, sim_clock, 60)
        await follower.round()
    assert follower.relister.is_leader and follower.relister.sweeps >= 1
