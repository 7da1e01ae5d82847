"""Readiness against the simulator's real loopback endpoints, on SQLite and PostgreSQL:
`ready` only once the app answers, `failed`/`startup_timeout` when it never does, TCP-only
readiness, and refused (private) targets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db.engine import Database
from service.domain import EventSource, Status
from service.novita import NovitaClient
from service.readiness import Prober
from service.simulator import Simulator
from service.workers.provisioner import Provisioner
from service.workers.readiness import ReadinessConfig, ReadinessWorker
from service.workers.reconciler import Reconciler
from tests.support.provisioning import (
    add_instance,
    advance,
    events,
    load,
    make_reconciler,
)
from tests.support.readiness import STARTUP_TIMEOUT, make_readiness


@pytest.fixture
def reconciler(database: Database, novita: NovitaClient, sim_clock: ManualClock) -> Reconciler:
    return make_reconciler(database, novita, sim_clock)


@pytest.fixture
def readiness(database: Database, sim_clock: ManualClock) -> ReadinessWorker:
    return make_readiness(database, sim_clock)


async def running(
    database: Database,
    simulator: Simulator,
    clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    app_delay: float | None,
    **spec: object,
) -> tuple[str, str]:
    instance_id = await add_instance(database, clock, **spec)
    await provisioner.run_once()
    novita_id = (await load(database, instance_id)).novita_instance_id
    assert novita_id is not None
    simulator.set_app_startup_delay(novita_id, app_delay)
    for _ in range(4):
        await advance(simulator, clock, 5)
        await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.RUNNING
    return instance_id, novita_id


async def test_an_app_that_comes_up_late_is_ready_only_once_its_ports_answer(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    readiness: ReadinessWorker,
) -> None:
    instance_id, _ = await running(
        database, simulator, sim_clock, provisioner, reconciler, app_delay=60
    )
    for _ in range(3):
        assert await readiness.run_once() == 1
        assert (await load(database, instance_id)).status is Status.RUNNING
        assert await readiness.run_once() == 0, "probed again only after the interval"
        await advance(simulator, sim_clock, 5)
    assert readiness.awaiting == 1

    await advance(simulator, sim_clock, 60)  # the app is up now
    await readiness.run_once()

    ready = await load(database, instance_id)
    assert ready.status is Status.READY
    assert ready.ready_at == sim_clock.now()
    assert ready.claim_owner is None
    last = (await events(database, instance_id))[-1]
    assert (last.kind, last.source, last.to_status) == (
        "ready",
        EventSource.RECONCILER,
        Status.READY,
    )
    probed = sorted((p["port"], p["result"]) for p in last.detail["probes"])
    assert probed == [(7860, "HTTP 200"), (8888, "HTTP 200")], "every HTTP port, none TCP"

    # Later polls keep `ready`: Novita still says running.
    await advance(simulator, sim_clock, 30)
    await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.READY


async def test_the_probe_pace_is_the_rows_and_holds_across_processes(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    readiness: ReadinessWorker,
) -> None:
    instance_id, _ = await running(
        database, simulator, sim_clock, provisioner, reconciler, app_delay=60
    )
    assert await readiness.run_once() == 1
    assert (await load(database, instance_id)).next_probe_at == sim_clock.now() + timedelta(
        seconds=5
    )
    # Another process (or this one restarted) keeps to the same pace.
    other = make_readiness(database, sim_clock, owner="ready-2")
    assert await other.run_once() == 0, "not probed again before the interval"
    await advance(simulator, sim_clock, 5)
    assert await other.run_once() == 1
    assert await readiness.run_once() == 0


async def test_an_app_that_never_answers_fails_with_startup_timeout(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    readiness: ReadinessWorker,
) -> None:
    instance_id, novita_id = await running(
        database, simulator, sim_clock, provisioner, reconciler, app_delay=None
    )
    running_at = (await load(database, instance_id)).running_at
    assert running_at is not None
    while sim_clock.now() - running_at < timedelta(seconds=STARTUP_TIMEOUT - 5):
        await readiness.run_once()
        assert (await load(database, instance_id)).status is Status.RUNNING
        await advance(simulator, sim_clock, 5)
    await advance(simulator, sim_clock, 5)
    await readiness.run_once()

    failed = await load(database, instance_id)
    assert (failed.status, failed.status_reason) == (Status.FAILED, "startup_timeout")
    last = (await events(database, instance_id))[-1]
    assert last.detail["startupTimeout"] == STARTUP_TIMEOUT
    assert {p["result"] for p in last.detail["probes"]} == {"HTTP 502"}
    assert readiness.timed_out_total == 1
    assert simulator.instance(novita_id) is not None, "left for the client to delete"


async def test_tcp_only_readiness(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    readiness: ReadinessWorker,
) -> None:
    instance_id, _ = await running(
        database,
        simulator,
        sim_clock,
        provisioner,
        reconciler,
        app_delay=20,
        readiness={"ports": [22], "path": "/"},
    )
    await readiness.run_once()
    assert (await load(database, instance_id)).status is Status.RUNNING, "refused until up"
    await advance(simulator, sim_clock, 20)
    await readiness.run_once()
    ready = await load(database, instance_id)
    assert ready.status is Status.READY
    probes = (await events(database, instance_id))[-1].detail["probes"]
    assert probes == [{"port": 22, "type": "tcp", "result": "connected"}]


async def test_an_instance_that_stopped_before_its_probe_is_not_probed(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    reconciler: Reconciler,
    readiness: ReadinessWorker,
) -> None:
    instance_id, novita_id = await running(
        database, simulator, sim_clock, provisioner, reconciler, app_delay=0
    )
    await novita.stop_instance(novita_id)
    await advance(simulator, sim_clock, 30)
    await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.STOPPED
    assert await readiness.run_once() == 0
    assert Status.READY not in {e.to_status for e in await events(database, instance_id)}


async def test_refused_targets_are_reported_and_never_ready(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    """Without the private-targets allowance the simulator's loopback endpoints are refused."""
    strict = ReadinessWorker(
        database=database,
        clock=sim_clock,
        owner="strict",
        prober=Prober(timeout=2.0, concurrency=8, allow_private=False),
        config=ReadinessConfig(interval=5.0, startup_timeout=STARTUP_TIMEOUT),
    )
    instance_id, _ = await running(
        database, simulator, sim_clock, provisioner, reconciler, app_delay=0
    )
    with capture_logs() as logs:
        await strict.run_once()
    assert (await load(database, instance_id)).status is Status.RUNNING
    assert "readiness.probe_refused" in {e["event"] for e in logs}
