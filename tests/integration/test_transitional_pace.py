"""Transitional instances paced by the call budget, against the simulator, on SQLite and
PostgreSQL: one alone is read at the floor; many are watched by one listing a round
instead of one read each, and their own polls wait as a safety net."""

from __future__ import annotations

import pytest

from service.clock import ManualClock
from service.db.engine import Database
from service.domain import Status
from service.novita import NovitaClient
from service.simulator import Simulator
from service.workers.call_budget import CallBudget
from service.workers.provisioner import Provisioner
from service.workers.reconciler import Reconciler
from tests.support.provisioning import (
    add_instance,
    advance,
    load,
    make_reconciler,
)

LIST_PATH = "/gpu/instances"
GET_PATH = "/gpu/instance"
BUDGET = CallBudget(
    per_minute=100, stable_share=0.5, floor=1.0, slow_interval=30.0, relist_interval=300.0
)


@pytest.fixture
def reconciler(database: Database, novita: NovitaClient, sim_clock: ManualClock) -> Reconciler:
    return make_reconciler(
        database, novita, sim_clock, fast_interval=5, slow_interval=30, budget=BUDGET
    )


async def submitted(
    database: Database, clock: ManualClock, provisioner: Provisioner, count: int
) -> list[str]:
    ids = [await add_instance(database, clock, name=f"w{n}") for n in range(count)]
    while await provisioner.run_once():
        pass
    for instance_id in ids:
        assert (await load(database, instance_id)).novita_instance_id is not None
    return ids


def calls(simulator: Simulator) -> tuple[int, int]:
    return simulator.requests_by_path[LIST_PATH], simulator.requests_by_path[GET_PATH]


async def test_one_instance_in_transition_is_read_at_the_floor(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    (instance_id,) = await submitted(database, sim_clock, provisioner, 1)
    await reconciler.run_once()
    assert not reconciler.by_listing
    assert reconciler.round_interval == 1.0
    instance = await load(database, instance_id)
    assert instance.next_check_at is not None
    assert (instance.next_check_at - sim_clock.now()).total_seconds() == pytest.approx(1.0)


async def test_many_in_transition_are_watched_by_one_listing_a_round(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    ids = await submitted(database, sim_clock, provisioner, 6)
    simulator.requests_by_path.clear()
    rounds = 0
    while rounds < 40:
        await advance(simulator, sim_clock, 1.0)
        await reconciler.run_once()
        rounds += 1
        statuses = {(await load(database, i)).status for i in ids}
        if statuses == {Status.RUNNING}:
            break
    assert statuses == {Status.RUNNING}
    lists, gets = calls(simulator)
    # One listing a round (one page holds them all), no read one by one.
    assert lists <= rounds
    assert gets == 0
    assert reconciler.listings >= rounds - 1


async def test_rows_a_listing_watches_are_read_one_by_one_soon_once_it_stops(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    ids = await submitted(database, sim_clock, provisioner, 6)
    await advance(simulator, sim_clock, 1.0)
    await reconciler.run_once()
    assert reconciler.by_listing and reconciler.round_interval is not None
    for instance_id in ids:
        due = (await load(database, instance_id)).next_check_at
        assert due is not None
        # Pushed back past the next listing, but no further than two rounds.
        wait = (due - sim_clock.now()).total_seconds()
        assert reconciler.round_interval < wait <= 2 * reconciler.round_interval + 0.01


async def test_a_row_created_between_listings_waits_for_the_next_one(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    provisioner: Provisioner,
    reconciler: Reconciler,
) -> None:
    """While listings watch the instances in transition, a new one costs no read of its
    own: the next listing sees it (and pushes its own poll back like the others')."""
    await submitted(database, sim_clock, provisioner, 6)
    await reconciler.run_once()
    assert reconciler.by_listing and reconciler.round_interval is not None
    (late,) = await submitted(database, sim_clock, provisioner, 1)
    simulator.requests_by_path.clear()
    await reconciler.run_once()  # the next listing is not due yet
    assert calls(simulator) == (0, 0)
    await advance(simulator, sim_clock, reconciler.round_interval)
    await reconciler.run_once()
    assert calls(simulator) == (1, 0)
    due = (await load(database, late)).next_check_at
    assert due is not None
    assert (due - sim_clock.now()).total_seconds() > reconciler.round_interval


async def test_instances_in_transition_have_a_loop_of_their_own(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
) -> None:
    """The stable polls never hold up a transitional read: each scope claims its own rows."""
    (instance_id,) = await submitted(database, sim_clock, provisioner, 1)
    stable = make_reconciler(database, novita, sim_clock, budget=BUDGET, scope="stable")
    moving = make_reconciler(
        database, novita, sim_clock, owner="r2", budget=BUDGET, scope="transitional"
    )
    assert (stable.name, moving.name) == ("reconciler", "transitions")
    simulator.requests_by_path.clear()
    assert await stable.run_once() == 0
    assert calls(simulator) == (0, 0)
    assert await moving.run_once() == 1
    assert calls(simulator) == (0, 1)
    assert (await load(database, instance_id)).status is Status.PROVISIONING
