"""Idle auto-stop through the whole service: the policy worker stops (or only records)
instances idle past their threshold, counting only the current run, and PATCH changes it."""

from __future__ import annotations

import asyncio

import pytest

from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import Workers, history, status_of
from tests.support.policies import (
    create_ready,
    events_of_kind,
    notifications,
    policy_worker,
)

MINUTE = 60.0


async def test_idle_instance_is_stopped_after_its_threshold(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await create_ready(service, workers, autoStop={"idleMinutes": 30})

    service.clock.advance(29 * MINUTE)
    assert await policy.run_once() == 0
    assert (await status_of(service, instance["id"]))["status"] == "ready"

    service.clock.advance(2 * MINUTE)
    assert await policy.run_once() == 1
    assert (await status_of(service, instance["id"]))["status"] == "stopping"
    last = (await history(service, instance["id"]))[-1]
    assert (last["kind"], last["source"], last["reason"]) == ("stop_requested", "policy", "idle")
    assert last["detail"]["idleMinutes"] == 30 and last["detail"]["gpuNum"] == 1
    queued = (await notifications(service, instance["id"]))[-1]
    assert queued.event_seq == last["sequence"]
    assert queued.payload["data"]["statusReason"] == "idle"

    await workers.settle()
    assert (await status_of(service, instance["id"]))["status"] == "stopped"


async def test_heartbeat_keeps_an_instance_alive(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await create_ready(service, workers, autoStop={"idleMinutes": 30})

    service.clock.advance(20 * MINUTE)
    status, _, _ = await service.call("PUT", f"/api/instances/{instance['id']}/last-used")
    assert status == 200
    service.clock.advance(20 * MINUTE)  # 40 min after ready, 20 after the heartbeat
    assert await policy.run_once() == 0
    assert (await status_of(service, instance["id"]))["status"] == "ready"

    service.clock.advance(11 * MINUTE)
    assert await policy.run_once() == 1
    assert (await status_of(service, instance["id"]))["status"] == "stopping"


async def test_idle_delete_action_deletes(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await create_ready(
        service, workers, autoStop={"idleMinutes": 15, "action": "delete"}
    )
    service.clock.advance(16 * MINUTE)
    assert await policy_worker(service).run_once() == 1
    last = (await history(service, instance["id"]))[-1]
    assert (last["toStatus"], last["source"], last["reason"]) == ("deleting", "policy", "idle")


async def test_restarted_instance_counts_only_its_current_run(service: ServiceUnderTest) -> None:
    """An earlier run's ready/heartbeat times never make a new run idle, and a grace period
    follows each start."""
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await create_ready(service, workers, autoStop={"idleMinutes": 1})
    path = f"/api/instances/{instance['id']}"
    await service.call("PUT", f"{path}/last-used")
    assert (await service.call("POST", f"{path}/stop"))[0] == 202
    await workers.settle()
    service.clock.advance(120 * MINUTE)
    assert (await service.call("POST", f"{path}/start"))[0] == 202
    await workers.settle()
    restarted = await status_of(service, instance["id"])
    assert restarted["status"] == "running" and restarted["readyAt"] is None
    assert await policy.run_once() == 0, "running (not ready) is never a candidate"

    from tests.support.policies import make_ready

    await make_ready(service, instance["id"])
    service.clock.advance(5 * MINUTE)  # idle 5 min > 1 min, but within the 10 min grace
    assert await policy.run_once() == 0
    assert (await status_of(service, instance["id"]))["status"] == "ready"
    service.clock.advance(6 * MINUTE)
    assert await policy.run_once() == 1
    assert (await status_of(service, instance["id"]))["status"] == "stopping"


@pytest.mark.service_settings(auto_stop_idle_minutes=30, auto_stop_dry_run=True)
async def test_dry_run_records_once_per_idle_period_and_acts_on_nothing(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await create_ready(service, workers)  # no autoStop: the service default
    service.clock.advance(31 * MINUTE)
    assert await policy.run_once() == 1
    service.clock.advance(60 * MINUTE)
    assert await policy.run_once() == 0
    assert (await status_of(service, instance["id"]))["status"] == "ready"
    notes = await events_of_kind(service, instance["id"], "idle_stop_dry_run")
    assert len(notes) == 1
    assert (notes[0]["source"], notes[0]["reason"]) == ("policy", "idle")
    assert notes[0]["detail"]["dryRun"] is True
    assert service.simulator.requests_by_path["/gpu/instance/stop"] == 0

    # A heartbeat starts a new idle period, recorded once more when it too runs out.
    await service.call("PUT", f"/api/instances/{instance['id']}/last-used")
    service.clock.advance(31 * MINUTE)
    assert await policy.run_once() == 1
    assert len(await events_of_kind(service, instance["id"], "idle_stop_dry_run")) == 2


async def test_two_policy_workers_never_act_on_one_instance_twice(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    instance = await create_ready(service, workers, autoStop={"idleMinutes": 5})
    service.clock.advance(11 * MINUTE)
    one, two = policy_worker(service, "policy-a"), policy_worker(service, "policy-b")
    results = await asyncio.gather(one.run_once(), two.run_once(), one.run_once())
    assert sum(results) == 1
    assert len(await events_of_kind(service, instance["id"], "stop_requested")) == 1
    assert service.simulator.requests_by_path["/gpu/instance/stop"] == 1


async def test_patch_changes_the_policies(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await create_ready(service, workers)
    path = f"/api/instances/{instance['id']}"
    service.clock.advance(40 * MINUTE)
    assert await policy.run_once() == 0, "no policy, no default: never stopped"

    status, body, _ = await service.call(
        "PATCH",
        path,
        json={"autoStop": {"idleMinutes": 30}, "onInterruption": {"action": "restart"}},
    )
    assert status == 200, body
    assert body["autoStop"] == {"idleMinutes": 30, "action": "stop"}
    assert body["onInterruption"] == {"action": "restart"}
    changed = (await history(service, instance["id"]))[-1]
    assert (changed["kind"], changed["source"]) == ("policy_changed", "api")

    # Leaving a field out keeps it; null clears it.
    status, body, _ = await service.call("PATCH", path, json={"onInterruption": None})
    assert status == 200 and body["onInterruption"] is None
    assert body["autoStop"] == {"idleMinutes": 30, "action": "stop"}

    assert await policy.run_once() == 1
    assert (await status_of(service, instance["id"]))["status"] == "stopping"


async def test_patch_validates_each_field_and_refuses_ended_instances(
    service: ServiceUnderTest,
) -> None:
    status, error, _ = await service.call(
        "PATCH",
        "/api/instances/inst_missing",
        json={"autoStop": {"idleMinutes": 5}},
    )
    assert status == 404, error

    from tests.support.lifecycle import BODY

    _, created, _ = await service.call("POST", "/api/instances", json=BODY)
    path = f"/api/instances/{created['id']}"
    status, error, _ = await service.call(
        "PATCH",
        path,
        json={"autoStop": {"idleMinutes": 0}, "onInterruption": {"action": "pray"}},
    )
    assert status == 422
    fields = {entry["field"] for entry in error["error"]["details"]["fields"]}
    assert fields == {"autoStop.idleMinutes", "onInterruption.action"}

    assert (await service.call("DELETE", path))[0] == 202  # never submitted: deleted at once
    status, error, _ = await service.call("PATCH", path, json={"autoStop": None})
    assert status == 409 and error["error"]["code"] == "ILLEGAL_TRANSITION"
