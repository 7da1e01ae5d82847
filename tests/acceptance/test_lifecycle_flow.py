"""Whole lifecycles through the public API, with the workers driven step by step against
the simulator on a ManualClock: provisioning, actions confirmed only by the provider,
capacity refusals, an open breaker, and provider webhooks applied from the inbox."""

from __future__ import annotations

from service.domain import Status
from service.novita import NovitaClient
from service.simulator import Simulator
from tests.plugins.service import INBOUND_SECRET, ServiceUnderTest
from tests.support.lifecycle import BODY, Workers, create_running, history, status_of


async def test_create_provision_run_stop_start_restart_delete(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    assert instance["region"] == "AS-SGP-02"
    assert instance["pricePerHour"] == "0.350000"
    assert instance["productId"] == "4090.16c62g"
    by_novita_id = await status_of(service, instance["novitaInstanceId"])
    assert by_novita_id["id"] == instance["id"]

    path = f"/api/instances/{instance['id']}"
    for action, requested, confirmed in [
        ("stop", "stopping", "stopped"),
        ("start", "starting", "running"),
        ("restart", "starting", "running"),
    ]:
        status, moved, _ = await service.call("POST", f"{path}/{action}")
        assert status == 202 and moved["status"] == requested, (action, moved)
        assert (await status_of(service, instance["id"]))["status"] == requested
        await workers.settle()
        assert (await status_of(service, instance["id"]))["status"] == confirmed, action

    status, deleting, _ = await service.call("DELETE", path)
    assert status == 202 and deleting["status"] == "deleting"
    await workers.settle(seconds=30)
    assert (await status_of(service, instance["id"]))["status"] == "deleted"

    statuses = [e["toStatus"] for e in await history(service, instance["id"])]
    assert statuses[:4] == ["pending", "provisioning", "running", "stopping"]
    assert statuses[-2:] == ["deleting", "deleted"]
    assert service.simulator.requests_by_path["/gpu/instance/create"] == 1


async def test_start_without_capacity_stays_stopped_with_the_reason(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    path = f"/api/instances/{instance['id']}"
    await service.call("POST", f"{path}/stop")
    await workers.settle()
    sim: Simulator = service.simulator
    sim.set_capacity("as-sgp-2", 0, product_id="4090.16c62g")

    status, error, _ = await service.call("POST", f"{path}/start")
    assert status == 409
    assert error["error"]["code"] == "INSUFFICIENT_CAPACITY"
    assert (await status_of(service, instance["id"]))["status"] == "stopped"
    last = (await history(service, instance["id"]))[-1]
    assert last["kind"] == "start_failed" and last["reason"] == "no_capacity"
    novita_id = instance["novitaInstanceId"]
    assert sim.instance(novita_id) is not None, "never deleted behind the client's back"


async def test_open_breaker_answers_503_with_retry_after(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    novita: NovitaClient = service.resources.novita
    service.simulator.faults.error_rate = 1.0
    for _ in range(5):
        await service.call("POST", f"/api/instances/{instance['id']}/stop")
    assert novita.breaker.state.value == "open"
    status, error, headers = await service.call("POST", f"/api/instances/{instance['id']}/stop")
    assert status == 503
    assert error["error"]["code"] == "NOVITA_CIRCUIT_OPEN"
    assert int(headers["Retry-After"]) >= 1
    assert (await status_of(service, instance["id"]))["status"] == "running"


async def test_provider_webhooks_move_instances_without_polling(
    service: ServiceUnderTest,
) -> None:
    """With pushed events, the applier alone takes an instance from provisioning to
    running; duplicates are stored once and nothing moves backwards."""
    workers = Workers(service)
    sim = service.simulator
    await sim.enable_push(f"{service.base_url}/webhooks/novita", INBOUND_SECRET, duplicate_rate=0.5)
    _, created, _ = await service.call("POST", "/api/instances", json=BODY)
    await workers.provisioner.run_once()
    for _ in range(8):
        service.clock.advance(5)
        await sim.tick()
    await sim.drain_push()
    applied = 0
    while await workers.applier.run_once():
        applied += 1
    instance = await status_of(service, created["id"])
    assert instance["status"] == "running", instance
    sources = {e["source"] for e in await history(service, created["id"])}
    assert "webhook" in sources and "reconciler" not in sources
    assert sim.push_stats is not None and sim.push_stats.duplicated > 0

    # A stale event (observed before what was applied) is recorded and ignored.
    from tests.support.inbound_webhooks import post, signed

    stale = {
        "type": "instance.status_changed",
        "timestamp": "2025-01-01T00:00:00Z",
        "data": {
            "instanceId": instance["novitaInstanceId"],
            "status": "pulling",
            "observedAt": "2025-01-01T00:00:00Z",
        },
    }
    assert (await post(service, *signed(service, stale)))[0] == 200
    await workers.applier.run_once()
    assert (await status_of(service, created["id"]))["status"] == Status.RUNNING.value
