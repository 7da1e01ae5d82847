"""Notifications end to end: a client's webhookUrl receives signed events for its
instance's lifecycle (verified by a real receiver with the `standardwebhooks` package),
and the notifications API lists, inspects and redelivers them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.plugins.service import WEBHOOK_SECRET, ServiceUnderTest
from tests.support.lifecycle import BODY, Workers
from tests.support.notifications import notify_all
from tests.support.webhook_receiver import WebhookReceiver, running_receiver


@pytest.fixture
async def receiver(service: ServiceUnderTest) -> AsyncIterator[WebhookReceiver]:
    async with running_receiver(WEBHOOK_SECRET, service.clock) as receiver:
        yield receiver
        assert receiver.verification_errors == [], "every delivery must verify"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
    ],
)
async def test_private_webhook_targets_are_refused_at_request_time(
    service: ServiceUnderTest, url: str
) -> None:
    status, error, _ = await service.call(
        "POST", "/api/instances", json={**BODY, "webhookUrl": url}
    )
    assert status == 422, error
    field = error["error"]["details"]["fields"][0]
    assert field["field"] == "webhookUrl" and "refused" in field["message"]


@pytest.mark.service_settings(allow_private_webhook_targets=True)
async def test_lifecycle_notifications_arrive_signed_in_sequence(
    service: ServiceUnderTest, receiver: WebhookReceiver
) -> None:
    workers = Workers(service)
    body = {
        **BODY,
        "webhookUrl": receiver.url("/hook"),
        "envs": [{"key": "HF_TOKEN", "value": "hf_never_in_payloads"}],
    }
    status, created, _ = await service.call("POST", "/api/instances", json=body)
    assert status == 202
    await workers.provisioner.run_once()
    await workers.settle()
    await notify_all(service)

    delivered = receiver.to("/hook")
    types = [item.payload["type"] for item in delivered]
    assert types == ["instance.created", "instance.provisioning", "instance.running"]
    assert [item.payload["data"]["sequence"] for item in delivered] == [1, 2, 3]
    assert all(item.payload["data"]["id"] == created["id"] for item in delivered)
    for item in delivered:
        assert b"hf_never_in_payloads" not in item.body
        assert WEBHOOK_SECRET.encode() not in item.body

    # The API shows each notification with its attempts, and redelivers with the same id.
    _, listed, _ = await service.call("GET", f"/api/notifications?instance={created['id']}")
    assert [n["type"] for n in listed["items"]] == types
    assert all(n["status"] == "delivered" for n in listed["items"])
    first = listed["items"][0]
    _, detail, _ = await service.call("GET", f"/api/notifications/{first['id']}")
    assert len(detail["attemptLog"]) == 1 and detail["attemptLog"][0]["statusCode"] == 200
    status, again, _ = await service.call("POST", f"/api/notifications/{first['id']}/redeliver")
    assert status == 202 and again["status"] == "pending"
    await notify_all(service)
    redelivered = [item for item in receiver.to("/hook") if item.webhook_id == first["id"]]
    assert len(redelivered) == 2, "redelivery reuses the webhook-id so receivers can dedupe"


@pytest.mark.service_settings(allow_private_webhook_targets=True, webhook_retry_schedule="0,5")
async def test_dead_letters_are_listed_and_redelivered_in_bulk(
    service: ServiceUnderTest, receiver: WebhookReceiver
) -> None:
    receiver.plan("/down", 500, 500)
    status, created, _ = await service.call(
        "POST", "/api/instances", json={**BODY, "webhookUrl": receiver.url("/down")}
    )
    await notify_all(service)
    service.clock.advance(10)
    await notify_all(service)
    _, failed, _ = await service.call("GET", "/api/notifications?status=failed")
    assert [n["instanceId"] for n in failed["items"]] == [created["id"]]

    status, result, _ = await service.call(
        "POST", "/api/notifications/redeliver", json={"since": "2000-01-01T00:00:00Z"}
    )
    assert status == 202 and result == {"redelivered": 1}
    await notify_all(service)
    _, delivered, _ = await service.call("GET", "/api/notifications?status=delivered")
    assert [n["instanceId"] for n in delivered["items"]] == [created["id"]]


async def test_notification_api_errors(service: ServiceUnderTest) -> None:
    status, error, _ = await service.call("GET", "/api/notifications/evt_missing")
    assert status == 404 and error["error"]["code"] == "NOTIFICATION_NOT_FOUND"
    for query, field in [("status=lost", "status"), ("limit=0", "limit"), ("cursor=@@", "cursor")]:
        status, error, _ = await service.call("GET", f"/api/notifications?{query}")
        assert status == 422 and error["error"]["details"]["fields"][0]["field"] == field
    status, error, _ = await service.call(
        "POST", "/api/notifications/redeliver", json={"since": "yesterday"}
    )
    assert status == 422
    status, _, _ = await service.call("GET", "/api/notifications", auth=False)
    assert status == 401
