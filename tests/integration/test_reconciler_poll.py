"""The reconciler's per-instance poll against the simulator, on SQLite and PostgreSQL: end
states confirmed only when Novita says so, lost and reclaimed instances, pausing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db.engine import Database
from service.domain import Status
from service.novita import CircuitBreaker, NovitaClient
from service.simulator import Simulator
from service.workers.observe import Pacing
from service.workers.provisioner import Provisioner
from service.workers.reconciler import Reconciler
from tests.support.provisioning import (
    add_instance,
    advance,
    api_moves,
    events,
    load,
    make_client,
    make_provisioner,
    make_reconciler,
)


@pytest.fixture
def reconciler(database: Database, novita: NovitaClient, sim_clock: ManualClock) -> Reconciler:
    return make_reconciler(
        database, novita, sim_clock, fast_interval=5, slow_interval=30, action_settle=30
    )


async def provisioned(
    database: Database, sim_clock: ManualClock, provisioner: Provisioner, **spec: object
) -> tuple[str, str]:
    instance_id = await add_instance(database, sim_clock, **spec)
    await provisioner.run_once()
    instance = await load(database, instance_id)
    assert instance.novita_instance_id is not None
    return instance_id, instance.novita_instance_id


async def poll_after(
    simulator: Simulator, sim_clock: ManualClock, reconciler: Reconciler, seconds: float
) -> int:
    await advance(simulator, sim_clock, seconds)
    return await reconciler.run_once()


async def running(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
    **spec: object,
) -> tuple[str, str]:
    instance_id, novita_id = await provisioned(database, sim_clock, provisioner, **spec)
    for _ in range(4):
        await poll_after(simulator, sim_clock, reconciler, 5)
    assert (await load(database, instance_id)).status is Status.RUNNING
    return instance_id, novita_id


async def test_transitional_instances_are_polled_fast_and_stable_ones_slowly(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, _ = await provisioned(database, sim_clock, provisioner)
    assert await reconciler.run_once() == 1
    instance = await load(database, instance_id)
    assert instance.status is Status.PROVISIONING
    assert instance.next_check_at == sim_clock.now() + timedelta(seconds=5)
    assert instance.claim_owner is None
    assert await reconciler.run_once() == 0, "not due yet"

    await poll_after(simulator, sim_clock, reconciler, 10)
    instance = await load(database, instance_id)
    assert instance.status is Status.RUNNING
    assert instance.running_at == sim_clock.now()
    assert instance.next_check_at == sim_clock.now() + timedelta(seconds=30)
    assert instance.port_mappings and all(m["endpoint"] for m in instance.port_mappings)
    assert await poll_after(simulator, sim_clock, reconciler, 29) == 0
    assert await poll_after(simulator, sim_clock, reconciler, 1) == 1
    assert (await load(database, instance_id)).status is Status.RUNNING, "ready is not ours"


async def test_stop_start_and_delete_are_confirmed_only_by_the_provider(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, novita_id = await running(database, simulator, sim_clock, provisioner, reconciler)

    await novita.stop_instance(novita_id)
    await api_moves(database, sim_clock, instance_id, Status.STOPPING)
    await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.STOPPING
    await poll_after(simulator, sim_clock, reconciler, 5)
    stopped = await load(database, instance_id)
    assert (stopped.status, stopped.provider_status) == (Status.STOPPED, "exited")
    assert stopped.port_mappings == ()

    await novita.start_instance(novita_id)
    await api_moves(database, sim_clock, instance_id, Status.STARTING)
    await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.STARTING
    await poll_after(simulator, sim_clock, reconciler, 5)
    assert (await load(database, instance_id)).status is Status.RUNNING

    await novita.delete_instance(novita_id)
    await api_moves(database, sim_clock, instance_id, Status.DELETING)
    await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.DELETING
    await poll_after(simulator, sim_clock, reconciler, 5)
    deleted = await load(database, instance_id)
    assert (deleted.status, deleted.provider_status) == (Status.DELETED, "removed")
    assert deleted.next_check_at is None
    history = [(e.to_status, e.source.value) for e in await events(database, instance_id)]
    assert history[-6:] == [
        (Status.STOPPING, "api"),
        (Status.STOPPED, "reconciler"),
        (Status.STARTING, "api"),
        (Status.RUNNING, "reconciler"),
        (Status.DELETING, "api"),
        (Status.DELETED, "reconciler"),
    ]


async def test_a_requested_stop_is_not_undone_by_a_stale_read_until_it_settles(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, _ = await running(database, simulator, sim_clock, provisioner, reconciler)
    # The API recorded a stop, but Novita never applied it: it still says running.
    await api_moves(database, sim_clock, instance_id, Status.STOPPING)
    await reconciler.run_once()
    assert (await load(database, instance_id)).status is Status.STOPPING
    await poll_after(simulator, sim_clock, reconciler, 25)
    assert (await load(database, instance_id)).status is Status.STOPPING
    await poll_after(simulator, sim_clock, reconciler, 10)
    assert (await load(database, instance_id)).status is Status.RUNNING, "Novita's word stands"


async def test_a_delete_novita_never_started_is_sent_again(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, _ = await running(database, simulator, sim_clock, provisioner, reconciler)
    await api_moves(database, sim_clock, instance_id, Status.DELETING)  # the delete was lost
    await reconciler.run_once()
    with capture_logs() as logs:
        for _ in range(8):
            await poll_after(simulator, sim_clock, reconciler, 5)
    assert "reconcile.delete_resent" in {e["event"] for e in logs}
    assert (await load(database, instance_id)).status is Status.DELETED


async def test_instance_novita_no_longer_has_is_failed_as_lost(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, novita_id = await running(database, simulator, sim_clock, provisioner, reconciler)
    await novita.delete_instance(novita_id)  # behind our back, and gone before we look
    await advance(simulator, sim_clock, 60)
    assert simulator.instance(novita_id) is None

    await reconciler.run_once()

    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "lost")
    assert (await events(database, instance_id))[-1].detail == {"notFound": True}


async def test_removed_without_our_delete_is_recorded_through_deleting(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, novita_id = await running(database, simulator, sim_clock, provisioner, reconciler)
    await novita.delete_instance(novita_id)
    await poll_after(simulator, sim_clock, reconciler, 30)
    assert (await load(database, instance_id)).status is Status.DELETED
    tail = [e.to_status for e in await events(database, instance_id)][-2:]
    assert tail == [Status.DELETING, Status.DELETED]


async def test_spot_reclaim_is_interrupted(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, novita_id = await running(
        database, simulator, sim_clock, provisioner, reconciler, billing_mode="spot"
    )
    assert (await load(database, instance_id)).price_per_hour is not None
    simulator.reclaim(novita_id)
    await poll_after(simulator, sim_clock, reconciler, 30)  # notified, reclaiming, terminated
    instance = await load(database, instance_id)
    assert instance.status is Status.INTERRUPTED
    assert (await events(database, instance_id))[-1].detail["spotStatus"] == "terminated"


async def test_status_error_while_creating_is_failed(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, novita_id = await provisioned(database, sim_clock, provisioner)
    simulator.set_status(
        novita_id, "exited", hold=True, status_error=("pullFailed", "image pull failed")
    )
    await reconciler.run_once()
    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "provider_error")
    detail = (await events(database, instance_id))[-1].detail
    assert detail["statusError"] == {"state": "pullFailed", "message": "image pull failed"}


async def test_a_move_the_table_refuses_is_logged_and_not_recorded(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, novita_id = await provisioned(database, sim_clock, provisioner)
    simulator.set_status(novita_id, "toStop", hold=True)  # provisioning → stopping: illegal
    before = await events(database, instance_id)

    with capture_logs() as logs:
        assert await reconciler.run_once() == 1

    assert (await load(database, instance_id)).status is Status.PROVISIONING
    assert await events(database, instance_id) == before
    assert "reconcile.transition_refused" in {e["event"] for e in logs}


async def test_poll_errors_back_off_per_instance(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    instance_id, _ = await provisioned(database, sim_clock, provisioner)
    simulator.faults.error_rate = 1.0
    delays = []
    for _ in range(3):
        await reconciler.run_once()
        instance = await load(database, instance_id)
        assert instance.next_check_at is not None
        delays.append((instance.next_check_at - sim_clock.now()).total_seconds())
        sim_clock.advance(delays[-1])
    assert delays == [5, 10, 20]
    simulator.faults.error_rate = 0.0
    await poll_after(simulator, sim_clock, reconciler, 0)
    assert (await load(database, instance_id)).status is Status.RUNNING


async def test_open_breaker_pauses_polling(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    sim_api_key: str,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, clock=sim_clock)
    async with make_client(simulator, sim_api_key, sim_clock, breaker=breaker) as client:
        provisioner = make_provisioner(database, client, sim_clock)
        reconciler = make_reconciler(database, client, sim_clock)
        instance_id, _ = await provisioned(database, sim_clock, provisioner)
        simulator.faults.error_rate = 1.0
        with capture_logs() as logs:
            await reconciler.run_once()  # fails once: the breaker opens
        assert "reconcile.paused" in {e["event"] for e in logs}
        simulator.faults.error_rate = 0.0
        requests = simulator.request_count

        await advance(simulator, sim_clock, 30)
        assert await reconciler.run_once() == 0
        assert reconciler.paused
        assert simulator.request_count == requests, "no calls while the breaker is open"
        assert (await load(database, instance_id)).status is Status.PROVISIONING

        await advance(simulator, sim_clock, 60)
        assert await reconciler.run_once() == 1
        assert not reconciler.paused
        assert (await load(database, instance_id)).status is Status.RUNNING


async def test_stable_polls_spread_out_to_stay_within_their_share_of_the_rate_limit(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    novita: NovitaClient,
) -> None:
    """3 stable instances with a budget of 2 polls a minute: one poll each 90 s, not 30."""
    reconciler = make_reconciler(
        database, novita, sim_clock, fast_interval=5, slow_interval=30, stable_budget=2
    )
    ids = [
        (await running(database, simulator, sim_clock, provisioner, reconciler, name=f"t{n}"))[0]
        for n in range(3)
    ]
    await poll_after(simulator, sim_clock, reconciler, 61)  # the count is a minute old
    for instance_id in ids:
        instance = await load(database, instance_id)
        assert instance.status is Status.RUNNING
        assert instance.next_check_at == sim_clock.now() + timedelta(seconds=90)


def test_the_stable_pace_is_the_slow_interval_until_the_budget_binds() -> None:
    pacing = Pacing(fast_interval=5, slow_interval=30, stable_budget=50)
    assert pacing.interval(Status.RUNNING) == 30
    assert replace(pacing, stable_count=25).interval(Status.RUNNING) == 30
    assert replace(pacing, stable_count=5000).interval(Status.RUNNING) == 6000
    assert replace(pacing, stable_count=5000).interval(Status.STARTING) == 5
    assert replace(pacing, stable_count=5000, stable_budget=None).stable_interval == 30
