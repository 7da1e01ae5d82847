"""The instances REST API over real HTTP: auth, validation, idempotency, reads, pagination,
and the lifecycle rules that need no provisioning (those are in test_provisioning_flow)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta

import pytest

from service.api.instances import request_fingerprint
from service.db import idempotency
from tests.plugins.service import API_KEY, ServiceUnderTest
from tests.support.api import body, create

LEGACY_BODY = {  # what clients of the earlier Express service send
    "name": "legacy-client",
    "productName": "RTX 4090 24GB",
    "templateId": "212",
    "gpuNum": 1,
    "rootfsSize": 60,
    "region": "AS-SGP-02",
    "webhookUrl": "https://hooks.example.com/novita",
    "billingMode": "onDemand",
}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic dGVzdA=="}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_api_requires_a_valid_key(service: ServiceUnderTest, headers: dict[str, str]) -> None:
    status, error, response_headers = await service.call(
        "GET", "/api/instances", headers=headers, auth=False
    )
    assert status == 401
    assert error["error"]["code"] == "UNAUTHORIZED"
    assert "Bearer" in response_headers["WWW-Authenticate"]


async def test_reading_one_instance_needs_a_key_too(service: ServiceUnderTest) -> None:
    """GET /api/instances/{id} is dispatched ahead of the router; the key check is not."""
    created = await create(service)
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        status, error, response_headers = await service.call(
            "GET", f"/api/instances/{created['id']}", headers=headers, auth=False
        )
        assert status == 401, error
        assert error["error"]["code"] == "UNAUTHORIZED"
        assert "Bearer" in response_headers["WWW-Authenticate"]


async def test_head_and_sub_paths_of_an_instance_still_route(service: ServiceUnderTest) -> None:
    created = await create(service)
    status, _, headers = await service.call("HEAD", f"/api/instances/{created['id']}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    status, events, _ = await service.call("GET", f"/api/instances/{created['id']}/events")
    assert status == 200 and events["items"][0]["toStatus"] == "pending"
    status, shown, _ = await service.call("GET", f"/api/instances/{created['id']}")
    assert status == 200 and shown["id"] == created["id"]


async def test_request_id_is_echoed_or_generated(service: ServiceUnderTest) -> None:
    _, error, headers = await service.call(
        "GET", "/api/instances/inst_nope", headers={"X-Request-ID": "req-123"}
    )
    assert headers["X-Request-ID"] == "req-123"
    assert error["error"]["requestId"] == "req-123"
    _, _, generated = await service.call("GET", "/api/instances")
    assert len(generated["X-Request-ID"]) == 32


async def test_create_answers_202_pending_with_location(service: ServiceUnderTest) -> None:
    status, created, headers = await service.call("POST", "/api/instances", json=body())
    assert status == 202
    assert created["status"] == "pending"
    assert headers["Location"] == f"/api/instances/{created['id']}"
    assert created["ports"] == [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}]
    assert created["envKeys"] == ["HF_TOKEN"]
    assert "hf_do_not_show" not in str(created), "env values are never returned"
    status, fetched, _ = await service.call("GET", headers["Location"])
    assert status == 200 and fetched == created


async def test_a_client_of_the_earlier_service_works_unchanged(service: ServiceUnderTest) -> None:
    status, created, _ = await service.call("POST", "/api/instances", json=LEGACY_BODY)
    assert status == 202, created
    assert created["templateId"] == "212"
    assert created["preferredRegion"] == "AS-SGP-02"
    assert created["webhookUrl"] == "https://hooks.example.com/novita"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gpuNum": 9}, "gpuNum"),
        ({"gpuNum": 0}, "gpuNum"),
        ({"gpuNum": "two"}, "gpuNum"),
        ({"billingMode": "hourly"}, "billingMode"),
        ({"rootfsSize": 5}, "rootfsSize"),
        ({"ports": [{"port": 2222, "type": "tcp"}]}, "ports.0.port"),
        ({"ports": [{"port": 70000}]}, "ports.0.port"),
        ({"ports": "8888/udp"}, "ports.0.type"),
        ({"ports": "abc"}, "ports"),
        ({"ports": "80/http,80/tcp"}, "ports"),
        ({"envs": [{"key": "1BAD", "value": "x"}]}, "envs.0.key"),
        ({"labels": {"team": 7}}, "labels.team"),
        ({"name": ""}, "name"),
        ({"name": "bad/name"}, "name"),
        ({"productName": None}, "productName"),
        ({"templateId": None}, "templateId"),
        ({"webhookUrl": "ftp://x"}, "webhookUrl"),
        ({"autoStop": {"idleMinutes": 0}}, "autoStop.idleMinutes"),
        ({"readiness": {"path": "health"}}, "readiness.path"),
        ({"unexpected": True}, "unexpected"),
    ],
)
async def test_each_validation_error_names_its_field(
    service: ServiceUnderTest, overrides: dict[str, object], field: str
) -> None:
    status, error, _ = await service.call("POST", "/api/instances", json=body(**overrides))
    assert status == 422, error
    assert error["error"]["code"] == "VALIDATION_ERROR"
    fields = [entry["field"] for entry in error["error"]["details"]["fields"]]
    assert field in fields, fields


@pytest.mark.parametrize(
    ("raw", "status"), [(b"{not json", 400), (b"[1, 2]", 400), (b"", 400), (b'"x"', 400)]
)
async def test_malformed_bodies_are_400(service: ServiceUnderTest, raw: bytes, status: int) -> None:
    code, error, _ = await service.call(
        "POST", "/api/instances", data=raw, headers={"Content-Type": "application/json"}
    )
    assert code == status
    assert error["error"]["code"] == "MALFORMED_REQUEST"


async def test_oversized_body_is_413(service: ServiceUnderTest) -> None:
    big = io.BytesIO(json.dumps(body(name="x" * 2_000_000)).encode())
    status, error, _ = await service.call(
        "POST", "/api/instances", data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert error["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_webhook_url_needs_a_signing_secret(service: ServiceUnderTest) -> None:
    from tests.plugins.service import service_settings

    original = service.resources.settings
    unsigned = service_settings(service.resources.database, webhook_secret="")
    object.__setattr__(service.resources, "settings", unsigned)
    try:
        status, error, _ = await service.call(
            "POST", "/api/instances", json=body(webhookUrl="https://hooks.example.com/x")
        )
    finally:
        object.__setattr__(service.resources, "settings", original)
    assert status == 422
    assert error["error"]["details"]["fields"][0]["field"] == "webhookUrl"
    assert "WEBHOOK_SECRET" in error["error"]["details"]["fields"][0]["message"]


async def test_unknown_id_is_404_everywhere(service: ServiceUnderTest) -> None:
    for method, path in [
        ("GET", "/api/instances/inst_missing"),
        ("GET", "/api/instances/inst_missing/events"),
        ("POST", "/api/instances/inst_missing/start"),
        ("POST", "/api/instances/inst_missing/stop"),
        ("POST", "/api/instances/inst_missing/restart"),
        ("DELETE", "/api/instances/inst_missing"),
        ("PUT", "/api/instances/inst_missing/last-used"),
    ]:
        status, error, _ = await service.call(method, path)
        assert status == 404, (method, path)
        assert error["error"]["code"] == "INSTANCE_NOT_FOUND"


async def test_illegal_transition_is_409_with_current_status(service: ServiceUnderTest) -> None:
    created = await create(service)
    for action in ("start", "stop", "restart"):
        status, error, _ = await service.call("POST", f"/api/instances/{created['id']}/{action}")
        assert status == 409, action
        assert error["error"]["code"] == "ILLEGAL_TRANSITION"
        assert error["error"]["details"]["currentStatus"] == "pending"


async def test_deleting_a_never_submitted_instance_deletes_it(service: ServiceUnderTest) -> None:
    created = await create(service)
    status, deleted, _ = await service.call("DELETE", f"/api/instances/{created['id']}")
    assert status == 202
    assert deleted["status"] == "deleted"
    status, error, _ = await service.call("DELETE", f"/api/instances/{created['id']}")
    assert status == 409 and error["error"]["details"]["currentStatus"] == "deleted"
    _, events, _ = await service.call("GET", f"/api/instances/{created['id']}/events")
    assert [e["toStatus"] for e in events["items"]] == ["pending", "deleting", "deleted"]


async def test_idempotency_replay_conflict_and_in_flight(service: ServiceUnderTest) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = await service.call("POST", "/api/instances", json=body(), headers=key)
    again = await service.call("POST", "/api/instances", json=body(), headers=key)
    assert first[0] == again[0] == 202
    assert again[1] == first[1], "the same key and body replays the stored response"
    assert again[2]["Idempotent-Replayed"] == "true"
    _, listed, _ = await service.call("GET", "/api/instances")
    assert len(listed["items"]) == 1, "a replay creates nothing"

    status, error, _ = await service.call(
        "POST", "/api/instances", json=body(gpuNum=4), headers=key
    )
    assert status == 409 and error["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert "different request" in error["error"]["message"]

    # A reservation whose request has not finished yet: another request with it is refused.
    async with service.resources.database.transaction() as conn:
        caller = hashlib.sha256(API_KEY.encode()).hexdigest()[:32]
        await idempotency.reserve(
            conn, caller, "busy-key", request_fingerprint(body()), now=service.clock.now()
        )
    status, error, _ = await service.call(
        "POST", "/api/instances", json=body(), headers={"Idempotency-Key": "busy-key"}
    )
    assert status == 409 and "in flight" in error["error"]["message"]


async def test_idempotency_keys_expire_after_a_day(service: ServiceUnderTest) -> None:
    key = {"Idempotency-Key": "daily"}
    first = await service.call("POST", "/api/instances", json=body(), headers=key)
    service.clock.advance(timedelta(hours=23).total_seconds())
    replay = await service.call("POST", "/api/instances", json=body(), headers=key)
    assert replay[1]["id"] == first[1]["id"]
    service.clock.advance(timedelta(hours=2).total_seconds())
    fresh = await service.call("POST", "/api/instances", json=body(), headers=key)
    assert fresh[1]["id"] != first[1]["id"]


async def test_list_filters_and_cursor_pagination(service: ServiceUnderTest) -> None:
    ids = []
    for n in range(7):
        service.clock.advance(1)
        created = await create(
            service, name=f"job-{n}", labels={"team": "vision" if n % 2 else "nlp"}
        )
        ids.append(created["id"])

    seen: list[str] = []
    cursor = None
    while True:
        query = "/api/instances?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await service.call("GET", query)
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)), "newest first, every instance exactly once"

    _, vision, _ = await service.call("GET", "/api/instances?label=team:vision")
    assert {i["name"] for i in vision["items"]} == {"job-1", "job-3", "job-5"}
    _, named, _ = await service.call("GET", "/api/instances?name=job-4")
    assert [i["id"] for i in named["items"]] == [ids[4]]
    _, pending, _ = await service.call("GET", "/api/instances?status=pending,failed")
    assert len(pending["items"]) == 7
    _, none, _ = await service.call("GET", "/api/instances?status=running")
    assert none["items"] == []
    _, by_product, _ = await service.call("GET", "/api/instances?product=RTX%204090%2024GB")
    assert len(by_product["items"]) == 7


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=sleeping", "status"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("cursor=%%%", "cursor"),
        ("label=novalue", "label"),
    ],
)
async def test_bad_query_parameters_are_422(
    service: ServiceUnderTest, query: str, field: str
) -> None:
    status, error, _ = await service.call("GET", f"/api/instances?{query}")
    assert status == 422
    assert error["error"]["details"]["fields"][0]["field"] == field


async def test_events_are_paginated_oldest_first(service: ServiceUnderTest) -> None:
    created = await create(service)
    await service.call("DELETE", f"/api/instances/{created['id']}")
    _, first, _ = await service.call("GET", f"/api/instances/{created['id']}/events?limit=2")
    assert [e["sequence"] for e in first["items"]] == [1, 2]
    _, rest, _ = await service.call(
        "GET", f"/api/instances/{created['id']}/events?limit=2&cursor={first['nextCursor']}"
    )
    assert [e["sequence"] for e in rest["items"]] == [3]
    assert rest["nextCursor"] is None


async def test_last_used_heartbeat(service: ServiceUnderTest) -> None:
    created = await create(service)
    path = f"/api/instances/{created['id']}/last-used"
    status, touched, _ = await service.call("PUT", path)
    assert status == 200
    assert touched["lastUsedAt"] == service.clock.now().isoformat().replace("+00:00", "Z")

    future = (service.clock.now() + timedelta(hours=1)).isoformat()
    status, error, _ = await service.call("PUT", path, json={"lastUsedAt": future})
    assert status == 422
    assert error["error"]["details"]["fields"][0]["field"] == "lastUsedAt"

    older = (service.clock.now() - timedelta(hours=1)).isoformat()
    status, kept, _ = await service.call("PUT", path, json={"lastUsedAt": older})
    assert status == 200 and kept["lastUsedAt"] == touched["lastUsedAt"]
