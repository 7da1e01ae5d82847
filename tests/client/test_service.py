"""The Python client against the real service (CLI subprocess, simulator, real time):
create, get, list with filters and pages, events, actions, heartbeats, notifications,
reports, and the typed errors for 401, 404, 409 and 422."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from novita_lifecycle_client import (
    AuthenticationError,
    ConflictError,
    LifecycleClient,
    NotFoundError,
    Notification,
    ValidationError,
)
from tests.support.client_service import RunningService

SPEC: dict[str, Any] = {"product_name": "RTX 4090 24GB", "template_id": "212"}
SETTLE = 60.0  # seconds: a bound, not a pace; instances move within ~10 s


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_create_get_list_with_filters_and_pages_and_events(client: LifecycleClient) -> None:
    suite = unique("list")
    created = [
        await client.create(name=f"{suite}-{n}", labels={"suite": suite}, **SPEC) for n in range(3)
    ]
    assert [c["status"] for c in created] == ["pending"] * 3
    assert created[0]["productName"] == "RTX 4090 24GB" and created[0]["templateId"] == "212"

    got = await client.get(created[0]["id"])
    assert (got["id"], got["name"], got["labels"]) == (
        created[0]["id"],
        f"{suite}-0",
        {"suite": suite},
    )

    listed = [i["id"] async for i in client.list(labels={"suite": suite}, page_size=2)]
    assert sorted(listed) == sorted(c["id"] for c in created), "all three, across two pages"
    named = [i["id"] async for i in client.list(name=f"{suite}-1")]
    assert named == [created[1]["id"]]
    page = await client.list_page(labels={"suite": suite}, limit=2)
    assert len(page.items) == 2 and page.next_cursor

    events = [e async for e in client.events(created[0]["id"])]
    assert events[0]["toStatus"] == "pending"
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)


async def test_an_idempotency_key_replays_and_a_changed_body_conflicts(
    client: LifecycleClient,
) -> None:
    key, name = unique("key"), unique("idem")
    first = await client.create(name=name, idempotency_key=key, **SPEC)
    again = await client.create(name=name, idempotency_key=key, **SPEC)
    assert again["id"] == first["id"]
    with pytest.raises(ConflictError) as caught:
        await client.create(name=f"{name}-other", idempotency_key=key, **SPEC)
    assert caught.value.status == 409 and caught.value.code == "IDEMPOTENCY_CONFLICT"


async def test_actions_take_an_instance_through_its_lifecycle(client: LifecycleClient) -> None:
    created = await client.create(name=unique("actions"), **SPEC)
    instance_id = created["id"]
    running = await client.wait_until(instance_id, "running", timeout=SETTLE)
    assert running["novitaInstanceId"]
    assert (await client.get(running["novitaInstanceId"]))["id"] == instance_id

    assert (await client.restart(instance_id))["status"] == "starting"
    await client.wait_until(instance_id, "running", timeout=SETTLE)
    assert (await client.stop(instance_id))["status"] == "stopping"
    await client.wait_until(instance_id, "stopped", timeout=SETTLE)
    assert (await client.start(instance_id))["status"] == "starting"
    await client.wait_until(instance_id, "running", timeout=SETTLE)
    assert (await client.delete(instance_id))["status"] == "deleting"
    await client.wait_until(instance_id, "deleted", timeout=SETTLE)

    kinds = [e["kind"] async for e in client.events(instance_id)]
    for requested in ("restart_requested", "stop_requested", "start_requested", "delete_requested"):
        assert requested in kinds


async def test_a_heartbeat_sets_last_used(client: LifecycleClient) -> None:
    created = await client.create(name=unique("heartbeat"), **SPEC)
    at = datetime.now(tz=UTC) - timedelta(minutes=5)
    touched = await client.touch_last_used(created["id"], at)
    assert touched["lastUsedAt"] is not None
    assert datetime.fromisoformat(touched["lastUsedAt"]) == at
    now = (await client.touch_last_used(created["id"]))["lastUsedAt"]
    assert now is not None and datetime.fromisoformat(now) > at


async def test_error_answers_are_typed_exceptions_with_the_service_code(
    client: LifecycleClient, lifecycle_service: RunningService
) -> None:
    with pytest.raises(NotFoundError) as missing:
        await client.get("inst_does_not_exist")
    assert (missing.value.status, missing.value.code) == (404, "INSTANCE_NOT_FOUND")
    assert missing.value.request_id

    created = await client.create(name=unique("conflict"), **SPEC)
    with pytest.raises(ConflictError) as illegal:
        await client.start(created["id"])  # only a stopped instance can be started
    assert (illegal.value.status, illegal.value.code) == (409, "ILLEGAL_TRANSITION")
    assert illegal.value.details["requestedStatus"] == "starting"

    with pytest.raises(ValidationError) as invalid:
        await client.create(name="no product", gpu_num=9)
    assert invalid.value.status == 422 and invalid.value.code == "VALIDATION_ERROR"
    assert "gpuNum" in {f["field"] for f in invalid.value.fields}

    async with LifecycleClient(lifecycle_service.base_url, "wrong-key") as stranger:
        with pytest.raises(AuthenticationError) as refused:
            await stranger.get(created["id"])
    assert (refused.value.status, refused.value.code) == (401, "UNAUTHORIZED")


async def _settled_notification(client: LifecycleClient, instance_id: str) -> Notification:
    """The instance's `instance.created` notification once the notifier has decided it."""
    async with asyncio.timeout(SETTLE):
        while True:
            found = [
                n
                async for n in client.list_notifications(
                    instance_id=instance_id, type="instance.created"
                )
            ]
            if found and found[0]["status"] != "pending":
                return found[0]
            await asyncio.sleep(0.2)


async def test_notifications_can_be_listed_inspected_and_redelivered(
    client: LifecycleClient,
) -> None:
    created = await client.create(name=unique("notify"), **SPEC)  # no webhookUrl: no target
    notification = await _settled_notification(client, created["id"])
    assert notification["status"] == "no_target"

    detail = await client.get_notification(notification["id"])
    assert detail["payload"]["type"] == "instance.created"
    assert detail["payload"]["data"]["id"] == created["id"]

    again = await client.redeliver(notification["id"])
    assert again["id"] == notification["id"] and again["status"] == "pending"
    with pytest.raises(NotFoundError):
        await client.get_notification("evt_does_not_exist")
    since = datetime.now(tz=UTC) - timedelta(hours=1)
    assert await client.redeliver_failed_since(since, instance_id=created["id"]) == 0


async def test_reports_when_the_service_has_them(client: LifecycleClient) -> None:
    try:
        fleet = await client.report("fleet")
    except NotFoundError:
        pytest.skip("this service has no /api/reports yet")
    assert fleet["report"] == "fleet"
    usage = await client.report(
        "usage", since=datetime.now(tz=UTC) - timedelta(days=1), group_by=["day", "region"]
    )
    assert usage["report"] == "usage"
    assert isinstance(await client.report("fleet", format="csv"), str)
    with pytest.raises(ValidationError) as invalid:
        await client.report("usage", group_by="colour")
    assert invalid.value.fields[0]["field"] == "groupBy"
    with pytest.raises(NotFoundError):
        await client.report("no-such-report")


async def test_plan_shows_where_a_create_would_land_and_creates_nothing(
    client: LifecycleClient,
) -> None:
    name = unique("plan")
    plan = await client.plan(name=name, gpu_num=2, region="CN-HK-01", **SPEC)
    assert plan["dryRun"] is True
    chosen = plan["chosen"]
    assert chosen is not None
    assert (chosen["region"], chosen["productId"]) == ("CN-HK-01", "4090.16c96g.v2")
    assert (chosen["pricePerGpuHour"], chosen["pricePerHour"]) == ("0.38", "0.76")
    assert plan["candidates"][0]["chosen"] and plan["candidates"][0]["rank"] == 1
    assert [i async for i in client.list(name=name)] == [], "nothing was created"

    with pytest.raises(ValidationError) as caught:
        await client.plan(name=name, product_name="RTX 4090", template_id="212", region="MARS")
    fields = {f["field"] for f in caught.value.details["fields"]}
    assert fields == {"productName", "region"}
