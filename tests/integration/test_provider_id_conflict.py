"""A provider that hands out an id another row already holds (its world was reset), on SQLite
and PostgreSQL: a clear, bounded failure; a delete that never acts on another row's instance;
and `/health` naming instances stuck in `pending`/`provisioning` (issue 16)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db import repository as repo
from service.domain import EventSource, Status
from service.novita import NovitaClient
from service.simulator import Simulator
from service.workers.provisioner import PROVIDER_ID_CONFLICT
from tests.plugins.service import ServiceUnderTest
from tests.support.provisioning import (
    add_instance,
    creates,
    events,
    load,
    make_client,
    make_provisioner,
)


@pytest.fixture
async def novita(
    simulator: Simulator, sim_api_key: str, sim_clock: ManualClock
) -> AsyncIterator[NovitaClient]:
    async with make_client(simulator, sim_api_key, sim_clock) as client:
        yield client


async def _provisioned_then_world_reset(
    service: ServiceUnderTest, novita: NovitaClient, *, holder_status: Status
) -> tuple[str, str, str]:
    """Row A gets Novita id X; A moves to `holder_status`; the simulator forgets everything
    (same seed, so its next id is X again); row B is provisioned. Returns A, B, X."""
    database, clock, simulator = service.resources.database, service.clock, service.simulator
    provisioner = make_provisioner(database, novita, clock)
    first = await add_instance(database, clock, name="first")
    assert await provisioner.run_once() == 1
    novita_id = (await load(database, first)).novita_instance_id
    assert novita_id is not None
    if holder_status is Status.FAILED:
        async with database.transaction() as conn:
            await repo.change_status(
                conn, first, Status.FAILED, source=EventSource.RECONCILER, now=clock.now(),
                reason="lost",
            )
    await simulator.reset()
    second = await add_instance(database, clock, name="second")
    with capture_logs() as logs:
        assert await provisioner.run_once() == 1
        assert await provisioner.run_once() == 0, "no retry: the failure is final"
    assert [e["event"] for e in logs if e["event"] == "provision.provider_id_conflict"] == [
        "provision.provider_id_conflict"
    ]
    assert not [e for e in logs if e.get("exc_info") or e["log_level"] == "critical"], logs
    assert creates(simulator) == 1, "one create after the reset, never retried"
    return first, second, novita_id


async def test_an_id_another_row_holds_fails_the_new_row_with_the_reason(
    service: ServiceUnderTest, novita: NovitaClient
) -> None:
    database, simulator = service.resources.database, service.simulator
    first, second, novita_id = await _provisioned_then_world_reset(
        service, novita, holder_status=Status.FAILED
    )
    row = await load(database, second)
    assert row.status is Status.FAILED
    assert row.status_reason == PROVIDER_ID_CONFLICT
    assert row.novita_instance_id is None
    failed = (await events(database, second))[-1]
    assert failed.detail["novitaInstanceId"] == novita_id
    assert failed.detail["heldBy"] == first
    assert novita_id in failed.detail["message"] and first in failed.detail["message"]
    # The holder is failed: the new instance at Novita, which nobody can track, is deleted.
    created = simulator.instance(novita_id)
    assert created is None or created.status in ("toRemove", "removing", "removed")
    assert (await load(database, first)).status is Status.FAILED


async def test_a_delete_never_acts_on_an_instance_made_for_another_row(
    service: ServiceUnderTest, novita: NovitaClient
) -> None:
    database, simulator = service.resources.database, service.simulator
    first, second, novita_id = await _provisioned_then_world_reset(
        service, novita, holder_status=Status.PROVISIONING
    )
    # The holder is live: the instance Novita made for `second` is left alone...
    assert (await load(database, second)).status is Status.FAILED
    live = simulator.instance(novita_id)
    assert live is not None and live.status not in ("toRemove", "removing", "removed")

    # ...and deleting the stale row `first` does not delete it either.
    status, body, _ = await service.call("DELETE", f"/api/instances/{first}")
    assert status == 202, body
    assert body["status"] == "deleted"
    still = simulator.instance(novita_id)
    assert still is not None and still.status not in ("toRemove", "removing", "removed")
    deleted = (await events(database, first))[-1]
    assert deleted.reason == "provider_id_reassigned"
    assert deleted.detail["belongsTo"] == second


@pytest.mark.service_settings(stuck_instance_seconds=600)
async def test_health_is_degraded_and_names_instances_stuck_pending_or_provisioning(
    service: ServiceUnderTest,
) -> None:
    database, clock = service.resources.database, service.clock
    await service.resources.figures.refresh()  # what the background reader does
    status, body, _ = await service.call("GET", "/health", auth=False)
    assert status == 200 and body["status"] == "ok", body
    assert body["checks"]["stuckInstances"]["pending"] == {"count": 0, "oldestAgeSeconds": None}

    old = await add_instance(database, clock, name="old")
    clock.advance(300)
    await add_instance(database, clock, name="younger")
    provisioning = await add_instance(database, clock, name="submitted")
    async with database.transaction() as conn:
        await repo.change_status(
            conn, provisioning, Status.PROVISIONING, source=EventSource.PROVISIONER,
            now=clock.now(), changes={"submitted_at": clock.now()},
        )
    clock.advance(400)  # old: 700 s pending; younger: 400 s; submitted: 400 s provisioning
    await service.resources.figures.refresh()  # what the background reader does
    status, body, _ = await service.call("GET", "/health", auth=False)
    assert status == 200
    assert body["status"] == "degraded", body
    stuck = body["checks"]["stuckInstances"]
    assert stuck["thresholdSeconds"] == 600
    assert stuck["pending"] == {"count": 1, "oldestAgeSeconds": 700.0}
    assert stuck["provisioning"] == {"count": 0, "oldestAgeSeconds": None}

    clock.advance(250)
    await service.resources.figures.refresh()  # what the background reader does
    status, body, _ = await service.call("GET", "/health", auth=False)
    stuck = body["checks"]["stuckInstances"]
    assert stuck["pending"] == {"count": 2, "oldestAgeSeconds": 950.0}
    assert stuck["provisioning"] == {"count": 1, "oldestAgeSeconds": 650.0}
    assert (await load(database, old)).status is Status.PENDING
