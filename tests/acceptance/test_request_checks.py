"""`POST /api/instances` checked against Novita's catalogue, and `?dryRun=true` (issue 16):
every bad field in one 422 with the valid values; a request accepted while Novita was down
fails at provisioning naming the bad value; a dry run shows the plan and creates nothing."""

from __future__ import annotations

from typing import Any

from service.domain import Status
from service.simulator import Faults
from service.workers.provisioner import INVALID_REQUEST
from tests.plugins.service import ServiceUnderTest
from tests.support.provisioning import load, make_client, make_provisioner

BASE: dict[str, Any] = {"name": "demo", "productName": "RTX 4090 24GB", "templateId": "212"}


async def _instances(service: ServiceUnderTest) -> list[dict[str, Any]]:
    status, body, _ = await service.call("GET", "/api/instances")
    assert status == 200
    items: list[dict[str, Any]] = body["items"]
    return items


def _fields(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert body["error"]["code"] == "VALIDATION_ERROR", body
    return {entry["field"]: entry for entry in body["error"]["details"]["fields"]}


async def test_every_unknown_value_is_named_at_once_with_the_valid_ones(
    service: ServiceUnderTest,
) -> None:
    status, body, _ = await service.call(
        "POST",
        "/api/instances",
        json={
            **BASE,
            "productName": "RTX 4090",
            "templateId": "99999",
            "region": "MARS-01",
            "regions": ["CN-HK-01", "VENUS-02"],
        },
    )
    assert status == 422, body
    fields = _fields(body)
    assert set(fields) == {"region", "regions.1", "productName", "templateId"}
    assert fields["region"]["value"] == "MARS-01"
    assert "MARS-01" in fields["region"]["message"]
    assert "AS-SGP-02" in fields["region"]["validValues"]
    assert "AS-SGP-02" in fields["region"]["message"]
    assert fields["regions.1"]["value"] == "VENUS-02"
    assert fields["productName"]["value"] == "RTX 4090"
    assert "did you mean 'RTX 4090 24GB'" in fields["productName"]["message"]
    assert "H100 SXM 80GB" in fields["productName"]["validValues"]
    assert fields["templateId"]["value"] == "99999"
    assert "99999" in fields["templateId"]["message"]
    assert await _instances(service) == [], "nothing is created"


async def test_an_unknown_product_id_and_a_billing_mode_the_product_lacks(
    service: ServiceUnderTest,
) -> None:
    status, body, _ = await service.call(
        "POST", "/api/instances", json={**BASE, "productName": None, "productId": "h200.x"}
    )
    assert status == 422, body
    fields = _fields(body)
    assert set(fields) == {"productId"}
    assert "4090.16c62g" in fields["productId"]["validValues"]
    assert "h200.x" in fields["productId"]["message"]

    # The EU RTX 3090 is sold on demand and monthly, never as spot.
    status, body, _ = await service.call(
        "POST",
        "/api/instances",
        json={**BASE, "productName": None, "productId": "3090.8c46g.eu", "billingMode": "spot"},
    )
    assert status == 422, body
    fields = _fields(body)
    assert set(fields) == {"billingMode"}
    assert fields["billingMode"]["value"] == "spot"
    assert fields["billingMode"]["validValues"] == ["monthly", "onDemand"]
    # Regions may be given as codes or cluster ids, in any case.
    status, body, _ = await service.call(
        "POST", "/api/instances", json={**BASE, "region": "as-sgp-2", "regions": ["cn-hk-01"]}
    )
    assert status == 202, body


async def test_accepted_while_novita_is_down_then_failed_naming_the_bad_value(
    service: ServiceUnderTest,
) -> None:
    service.simulator.faults = Faults(error_rate=1.0)
    status, body, _ = await service.call(
        "POST", "/api/instances", json={**BASE, "region": "MARS-01"}
    )
    assert status == 202, body  # Novita cannot be asked now: accepted, checked later
    service.simulator.faults = Faults()

    database, clock = service.resources.database, service.clock
    async with make_client(service.simulator, "sim-key", clock) as novita:
        provisioner = make_provisioner(database, novita, clock)
        assert await provisioner.run_once() == 1
    failed = await load(database, body["id"])
    assert (failed.status, failed.status_reason) == (Status.FAILED, INVALID_REQUEST)
    status, events, _ = await service.call("GET", f"/api/instances/{body['id']}/events")
    detail = events["items"][-1]["detail"]
    assert "MARS-01" in detail["message"]
    assert detail["fields"][0]["field"] == "region"


async def test_a_dry_run_answers_the_plan_and_creates_nothing(
    service: ServiceUnderTest,
) -> None:
    service.simulator.set_capacity("as-sgp-2", 0)  # the preferred region has no capacity
    request = {**BASE, "gpuNum": 2, "region": "AS-SGP-02"}
    headers = {"Idempotency-Key": "plan-then-create"}
    status, plan, _ = await service.call(
        "POST", "/api/instances?dryRun=true", json=request, headers=headers
    )
    assert status == 200, plan
    assert plan["dryRun"] is True
    assert plan["chosen"] == {
        "region": "CN-HK-01",
        "clusterId": "cn-hongkong-1",
        "productId": "4090.16c96g.v2",
        "productName": "RTX 4090 24GB",
        "pricePerGpuHour": "0.38",
        "pricePerHour": "0.76",
        "rootfsSize": plan["chosen"]["rootfsSize"],
    }
    assert plan["regionOrder"][:3] == ["AS-SGP-02", "CN-HK-01", "AS-IN-01"]
    ranked = [c for c in plan["candidates"] if c["rank"] is not None]
    assert [(c["rank"], c["region"], c["chosen"]) for c in ranked[:3]] == [
        (1, "CN-HK-01", True),
        (2, "AS-IN-01", False),
        (3, "US-CA-06", False),
    ]
    assert ranked[1]["reason"].startswith("fallback 1")
    skipped = [c for c in plan["candidates"] if c["rank"] is None]
    assert [(c["region"], c["productId"]) for c in skipped] == [("AS-SGP-02", "4090.16c62g")]
    assert skipped[0]["reason"].startswith("not deployable now")
    assert skipped[0]["pricePerHour"] == "0.7"
    assert await _instances(service) == [], "a dry run creates nothing"

    # The Idempotency-Key was not used up: the real create with it is a first create.
    status, created, response_headers = await service.call(
        "POST", "/api/instances", json=request, headers=headers
    )
    assert status == 202, created
    assert "Idempotent-Replayed" not in response_headers
    assert len(await _instances(service)) == 1


async def test_a_dry_run_refuses_what_can_never_work_and_needs_novita(
    service: ServiceUnderTest,
) -> None:
    service.simulator.faults = Faults(error_rate=1.0)
    status, body, headers = await service.call("POST", "/api/instances?dryRun=true", json=BASE)
    assert status == 503, body
    assert "Retry-After" in headers
    service.simulator.faults = Faults()

    status, body, _ = await service.call(
        "POST", "/api/instances?dryRun=true", json={**BASE, "region": "MARS-01"}
    )
    assert status == 422
    assert set(_fields(body)) == {"region"}
    status, body, _ = await service.call("POST", "/api/instances?dryRun=maybe", json=BASE)
    assert status == 422
    assert set(_fields(body)) == {"dryRun"}
    assert await _instances(service) == []
