"""Shared pieces of the provisioner and reconciler tests (not a test module itself).

Everything runs on the simulator's ManualClock: the client's retry/limiter sleeps advance
that clock instead of waiting, so no test sleeps on the wall clock.
"""

from __future__ import annotations

from typing import Any

from service.clock import ManualClock
from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Instance, InstanceEvent, InstanceSpec, Status
from service.novita import CircuitBreaker, NovitaClient
from service.simulator import Simulator
from service.workers.provisioner import Provisioner, ProvisionerConfig
from service.workers.reconciler import Reconciler, ReconcilerConfig

CREATE_PATH = "/gpu/instance/create"


class ClockSleep:
    """The client's sleep: records each delay and advances the manual clock by it."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


def make_client(
    simulator: Simulator,
    api_key: str,
    clock: ManualClock,
    *,
    breaker: CircuitBreaker | None = None,
) -> NovitaClient:
    return NovitaClient(
        simulator.base_url,
        api_key,
        clock=clock,
        sleep=ClockSleep(clock),
        timeout=5.0,
        breaker=breaker or CircuitBreaker(clock=clock),
    )


def make_provisioner(
    database: Database, novita: NovitaClient, clock: ManualClock, owner: str = "p1", **config: Any
) -> Provisioner:
    return Provisioner(
        database=database,
        novita=novita,
        clock=clock,
        owner=owner,
        config=ProvisionerConfig(**config),
    )


def make_reconciler(
    database: Database, novita: NovitaClient, clock: ManualClock, owner: str = "r1", **config: Any
) -> Reconciler:
    return Reconciler(
        database=database,
        novita=novita,
        clock=clock,
        owner=owner,
        config=ReconcilerConfig(**config),
    )


def spec(**overrides: Any) -> InstanceSpec:
    values: dict[str, Any] = {
        "name": "trainer",
        "product_name": "RTX 4090 24GB",
        "template_id": "212",
        "gpu_num": 1,
        "envs": ({"key": "JUPYTER_TOKEN", "value": "s3cr3t-token"},),
        "ports": ({"port": 7860, "type": "http"},),
    }
    values.update(overrides)
    return InstanceSpec(**values)


async def add_instance(database: Database, clock: ManualClock, **overrides: Any) -> str:
    async with database.transaction() as conn:
        result = await repo.insert_instance(conn, spec(**overrides), now=clock.now())
    return result.instance.id


async def load(database: Database, instance_id: str) -> Instance:
    async with database.read() as conn:
        return await repo.get_instance(conn, instance_id)


async def events(database: Database, instance_id: str) -> list[InstanceEvent]:
    async with database.read() as conn:
        return (await repo.list_events(conn, instance_id)).items


async def api_moves(database: Database, clock: ManualClock, instance_id: str, to: Status) -> None:
    """What the REST API does after asking Novita for an action."""
    async with database.transaction() as conn:
        await repo.change_status(conn, instance_id, to, source=EventSource.API, now=clock.now())


async def advance(simulator: Simulator, clock: ManualClock, seconds: float) -> None:
    """Let simulated time pass in small steps, so every dwell ends on time."""
    while seconds > 0:
        step = min(seconds, 1.0)
        clock.advance(step)
        seconds -= step
        await simulator.tick()


def creates(simulator: Simulator) -> int:
    return simulator.requests_by_path[CREATE_PATH]
