"""Actions whose answer was lost: Novita did what was asked, the caller was not told, and
the repeat is refused as "invalid state change". The service re-reads the provider and
answers accepted when the instance is at or heading to the target, recording the event as
the caller's (docs/novita-facts.md)."""

from __future__ import annotations

import dataclasses

import pytest

from service.errors import ProviderStateConflictError
from service.lifecycle import Lifecycle
from service.novita import CircuitBreaker, NovitaClient
from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import Workers, create_running, history, status_of
from tests.support.policies import create_ready, notifications, policy_worker
from tests.support.provisioning import ClockSleep


@pytest.mark.parametrize(
    ("action", "requested", "kind"),
    [("stop", "stopping", "stop_requested"), ("restart", "starting", "restart_requested")],
)
async def test_a_repeat_after_a_lost_answer_is_accepted_as_the_callers_change(
    service: ServiceUnderTest, action: str, requested: str, kind: str
) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    path = f"/api/instances/{instance['id']}/{action}"
    service.simulator.faults.action_500_after_action = 1

    lost, _, _ = await service.call("POST", path)  # done at Novita; the answer was a 500
    assert lost >= 500
    status, moved, _ = await service.call("POST", path)  # the client tries again

    assert status == 202, moved
    assert moved["status"] == requested
    last = (await history(service, instance["id"]))[-1]
    assert (last["kind"], last["source"], last["toStatus"]) == (kind, "api", requested)
    assert last["detail"]["confirmedBy"] == "provider_read"


async def test_the_clients_own_retry_is_confirmed_within_one_call(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    clock = service.clock
    retrying = NovitaClient(
        service.simulator.base_url,
        "sim-key",
        clock=clock,
        sleep=ClockSleep(clock),
        max_attempts=3,
        breaker=CircuitBreaker(failure_threshold=100, clock=clock),
    )
    async with retrying:
        lifecycle = Lifecycle(dataclasses.replace(service.resources, novita=retrying))
        service.simulator.faults.action_500_after_action = 1
        stopped = await lifecycle.stop(instance["id"])
    assert stopped.status.value == "stopping"
    assert service.simulator.requests_by_path["/gpu/instance/stop"] == 2
    await workers.settle()
    assert (await status_of(service, instance["id"]))["status"] == "stopped"


async def test_delete_whose_answer_was_lost_is_accepted(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    path = f"/api/instances/{instance['id']}"
    service.simulator.faults.action_500_after_action = 1
    lost, _, _ = await service.call("DELETE", path)
    assert lost >= 500
    status, deleting, _ = await service.call("DELETE", path)
    assert status == 202 and deleting["status"] == "deleting"
    await workers.settle(seconds=30)
    assert (await status_of(service, instance["id"]))["status"] == "deleted"


async def test_a_real_conflict_is_still_refused(service: ServiceUnderTest) -> None:
    """Novita says the instance is somewhere else entirely: 409, nothing recorded."""
    workers = Workers(service)
    instance = await create_running(service, workers)
    novita_id = instance["novitaInstanceId"]
    service.simulator.set_status(novita_id, "toRestart", hold=True)
    lifecycle = Lifecycle(service.resources)
    with pytest.raises(ProviderStateConflictError) as refused:
        await lifecycle.stop(instance["id"])
    assert refused.value.details["providerStatus"] == "toRestart"
    assert (await status_of(service, instance["id"]))["status"] == "running"


# -- intents: the asker's event, whoever observes the change ----------------------------


async def test_idle_stop_whose_answer_was_lost_is_recorded_as_idle_by_the_poll(
    service: ServiceUnderTest,
) -> None:
    """The stop took effect but the policy worker was told 500: the reconciler's read moves
    the instance, and the event is still the policy's, with reason `idle` and its detail."""
    workers = Workers(service)
    policy = policy_worker(service)
    instance = await create_ready(service, workers, autoStop={"idleMinutes": 30})
    service.clock.advance(31 * 60)
    service.simulator.faults.action_500_after_action = 1

    assert await policy.run_once() == 0  # logged as a failure...
    assert (await status_of(service, instance["id"]))["status"] == "ready"
    await workers.settle()

    assert (await status_of(service, instance["id"]))["status"] == "stopped"
    # The poll may find it stopping or already exited: the first change down carries it.
    stopping = next(e for e in await history(service, instance["id"])
                    if e["toStatus"] in ("stopping", "stopped"))
    assert (stopping["kind"], stopping["source"], stopping["reason"]) == (
        "stop_requested", "policy", "idle",
    )
    assert stopping["detail"]["observedBy"] == "reconciler"
    assert stopping["detail"]["idleMinutes"] == 30
    queued = [n for n in await notifications(service, instance["id"])
              if n.event_seq == stopping["sequence"]]
    assert queued and queued[0].payload["data"]["statusReason"] == "idle"
    assert await policy.run_once() == 0  # ...and never stopped twice


async def test_a_webhook_that_lands_first_carries_the_api_action(
    service: ServiceUnderTest,
) -> None:
    """The provider's event is applied before the answer is recorded: one `stop_requested`
    event from the API, observed by the webhook; the late record adds nothing."""
    from tests.support.inbound_webhooks import post, signed

    workers = Workers(service)
    instance = await create_running(service, workers)
    service.simulator.faults.action_500_after_action = 1
    lost, _, _ = await service.call("POST", f"/api/instances/{instance['id']}/stop")
    assert lost >= 500
    event = {
        "type": "instance.status_changed",
        "timestamp": service.clock.now().isoformat(),
        "data": {"instanceId": instance["novitaInstanceId"], "status": "toStop"},
    }
    assert (await post(service, *signed(service, event)))[0] == 200
    while await workers.applier.run_once():
        pass
    status, _, _ = await service.call("POST", f"/api/instances/{instance['id']}/stop")
    assert status == 409  # already stopping here: the state machine says so
    stops = [e for e in await history(service, instance["id"]) if e["toStatus"] == "stopping"]
    assert [(e["kind"], e["source"], e["detail"]["observedBy"]) for e in stops] == [
        ("stop_requested", "api", "webhook")
    ]


async def test_a_refused_action_leaves_no_intent_behind(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    service.simulator.set_status(instance["novitaInstanceId"], "toRestart", hold=True)
    with pytest.raises(ProviderStateConflictError):
        await Lifecycle(service.resources).stop(instance["id"])
    stored = await Lifecycle(service.resources).get(instance["id"])
    assert stored.action_intent is None


async def test_a_replacement_delete_whose_answer_was_lost_keeps_reason_replaced(
    service: ServiceUnderTest,
) -> None:
    """Spot recreate: the original's delete reaches Novita, its answer is lost; the poll
    that sees it go records the policy's `replaced` delete, and nothing is deleted twice."""
    from tests.support.policies import make_ready
    from tests.support.spot import reclaimed

    workers = Workers(service)
    policy = policy_worker(service)
    original = await reclaimed(service, workers, onInterruption={"action": "recreate"})
    assert await policy.run_once() == 1
    replacement_id = (await status_of(service, original["id"]))["replacedByInstanceId"]
    await workers.provisioner.run_once()
    await workers.settle()
    await make_ready(service, replacement_id)
    service.clock.advance(60)
    service.simulator.faults.action_500_after_action = 1

    assert await policy.run_once() == 0  # the delete's answer was a 500
    await workers.settle(seconds=30)

    assert (await status_of(service, original["id"]))["status"] == "deleted"
    going = next(e for e in await history(service, original["id"])
                 if e["toStatus"] in ("deleting", "deleted"))
    assert (going["kind"], going["source"], going["reason"]) == (
        "delete_requested", "policy", "replaced",
    )
    assert going["detail"]["replacementId"] == replacement_id
    assert going["detail"]["observedBy"] == "reconciler"
    assert service.simulator.requests_by_path["/gpu/instance/delete"] == 1
