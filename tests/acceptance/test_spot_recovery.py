"""Spot interruption recovery through the whole service: a simulator reclaim, seen by the
reconciler, then each `onInterruption` policy's outcome, bounded when capacity never returns."""

from __future__ import annotations

import pytest

from service.workers.policy import PolicyWorker
from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import Workers, history, status_of
from tests.support.policies import (
    events_of_kind,
    make_ready,
    notifications,
    policy_worker,
)
from tests.support.spot import reclaimed


async def test_notify_only_records_and_notifies(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await reclaimed(service, workers)  # no policy: the default, notify
    assert await policy_worker(service).run_once() == 0
    assert (await status_of(service, instance["id"]))["status"] == "interrupted"
    types = [m.type for m in await notifications(service, instance["id"])]
    assert types[-1] == "instance.interrupted"
    assert service.simulator.requests_by_path["/gpu/instance/start"] == 0


async def test_restart_policy_runs_it_again(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await reclaimed(service, workers, onInterruption={"action": "restart"})
    assert await policy_worker(service).run_once() == 1
    assert (await status_of(service, instance["id"]))["status"] == "starting"
    await workers.settle()
    assert (await status_of(service, instance["id"]))["status"] == "running"

    events = await history(service, instance["id"])
    statuses = [e["toStatus"] for e in events if e["fromStatus"] != e["toStatus"]]
    assert statuses[-3:] == ["interrupted", "starting", "running"]
    start = next(e for e in events if e["kind"] == "start_requested")
    assert (start["source"], start["reason"]) == ("policy", "spot_restart")
    types = [m.type for m in await notifications(service, instance["id"])]
    assert "instance.interrupted" in types and types[-1] == "instance.running"


async def test_recreate_policy_replaces_it_in_another_region(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    policy = policy_worker(service)
    original = await reclaimed(service, workers, onInterruption={"action": "recreate"})
    assert original["region"] == "AS-SGP-02"
    assert await policy.run_once() == 1

    linked = await status_of(service, original["id"])
    replacement_id = linked["replacedByInstanceId"]
    assert replacement_id is not None and linked["status"] == "interrupted"
    replacement = await status_of(service, replacement_id)
    assert replacement["replacesInstanceId"] == original["id"]
    assert replacement["billingMode"] == "spot" and replacement["status"] == "pending"
    assert replacement["onInterruption"] == {"action": "recreate"}
    made = (await events_of_kind(service, original["id"], "replacement_created"))[0]
    assert made["detail"]["replacementId"] == replacement_id
    back = (await events_of_kind(service, replacement_id, "replaces"))[0]
    assert back["detail"]["originalId"] == original["id"]

    await workers.provisioner.run_once()
    await workers.settle()
    replacement = await status_of(service, replacement_id)
    assert replacement["status"] == "running"
    assert replacement["region"] != "AS-SGP-02"

    # Not ready yet: the original stays.
    assert await policy.run_once() == 0
    assert (await status_of(service, original["id"]))["status"] == "interrupted"

    await make_ready(service, replacement_id)
    service.clock.advance(60)
    assert await policy.run_once() == 1
    assert (await status_of(service, original["id"]))["status"] == "deleting"
    await workers.settle(seconds=30)
    assert (await status_of(service, original["id"]))["status"] == "deleted"
    delete = (await events_of_kind(service, original["id"], "delete_requested"))[0]
    assert (delete["source"], delete["reason"]) == ("policy", "replaced")
    assert delete["detail"]["replacementId"] == replacement_id
    assert (await status_of(service, replacement_id))["status"] == "ready"


@pytest.mark.service_settings(spot_recovery_backoff_seconds=30)
async def test_no_capacity_retries_with_backoff_then_fails(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await reclaimed(
        service, workers, onInterruption={"action": "restart", "maxAttempts": 3}
    )
    service.simulator.set_capacity("as-sgp-2", 0, product_id="4090.16c62g", spot=True)

    assert await policy.run_once() == 1  # attempt 1 refused; next in 30 s
    service.clock.advance(29)
    assert await policy.run_once() == 0, "backing off"
    service.clock.advance(1)
    assert await policy.run_once() == 1  # attempt 2 refused; next in 60 s
    service.clock.advance(59)
    assert await policy.run_once() == 0
    service.clock.advance(1)
    assert await policy.run_once() == 1  # attempt 3 refused: exhausted

    failed = await status_of(service, instance["id"])
    assert failed["status"] == "failed" and failed["statusReason"] == "spot_recovery_exhausted"
    refusals = await events_of_kind(service, instance["id"], "start_failed")
    assert [(e["source"], e["reason"]) for e in refusals] == [("policy", "no_capacity")] * 3
    last = (await history(service, instance["id"]))[-1]
    assert last["source"] == "policy" and last["detail"]["attempts"] == 3
    assert last["detail"]["lastError"]["code"] == "INSUFFICIENT_CAPACITY"
    assert (await notifications(service, instance["id"]))[-1].type == "instance.failed"
    assert service.simulator.requests_by_path["/gpu/instance/start"] == 3


@pytest.mark.service_settings(spot_interruption_action="restart", spot_recovery_max_minutes=5)
async def test_time_limit_ends_recovery_and_service_default_applies(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    policy: PolicyWorker = policy_worker(service)
    instance = await reclaimed(service, workers)  # no policy of its own: the default restart
    service.simulator.set_capacity("as-sgp-2", 0, product_id="4090.16c62g", spot=True)
    assert await policy.run_once() == 1
    for _ in range(10):
        service.clock.advance(60)
        await policy.run_once()
    failed = await status_of(service, instance["id"])
    assert failed["status"] == "failed" and failed["statusReason"] == "spot_recovery_exhausted"
    attempts = len(await events_of_kind(service, instance["id"], "start_failed"))
    assert 1 < attempts < 5, "bounded by time, not by the 5 attempts"
