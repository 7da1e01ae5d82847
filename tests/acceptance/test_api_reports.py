"""`GET /api/reports/{name}` over real HTTP: authenticated, validated (422 names the
parameter), 404 for an unknown report, and reports that reflect what the service did:
instances created through the API, webhooks duplicated and rejected at the endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugins.service import ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed

CREATE = {"name": "trainer", "productName": "RTX 4090 24GB", "imageUrl": "img:1", "gpuNum": 2}


async def test_reports_need_an_api_key(service: ServiceUnderTest) -> None:
    status, body, _ = await service.call("GET", "/api/reports/fleet", auth=False)
    assert status == 401
    assert body["error"]["code"] == "UNAUTHORIZED"


async def test_unknown_report_is_404(service: ServiceUnderTest) -> None:
    status, body, _ = await service.call("GET", "/api/reports/costs")
    assert status == 404
    assert "fleet, usage, provisioning, reliability" in body["error"]["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=last-tuesday", "since"),
        ("until=2026-02-30", "until"),
        ("since=2026-01-02&until=2026-01-01", "since"),
        ("groupBy=colour", "groupBy"),
        ("at=2026-01-01", "at"),
        ("format=xml", "format"),
        ("section=nope", "section"),
        ("sinse=2026-01-01", "sinse"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    service: ServiceUnderTest, query: str, field: str
) -> None:
    status, body, _ = await service.call("GET", f"/api/reports/usage?{query}")
    assert status == 422, body
    assert [item["field"] for item in body["error"]["details"]["fields"]] == [field]


async def test_fleet_counts_instances_created_through_the_api(service: ServiceUnderTest) -> None:
    for _ in range(2):
        status, _, _ = await service.call("POST", "/api/instances", json=CREATE)
        assert status == 202
    status, body, _ = await service.call("GET", "/api/reports/fleet?groupBy=status,product")
    assert status == 200
    assert body["report"] == "fleet"
    assert body["parameters"]["groupBy"] == ["status", "product"]
    assert body["sections"]["fleet"]["rows"] == [
        {"status": "pending", "product": "RTX 4090 24GB", "instances": 2}
    ]


async def test_csv_format_is_the_first_section(service: ServiceUnderTest) -> None:
    status, text, headers = await _text(service, "/api/reports/reliability?format=csv")
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert text.splitlines() == ["received,unprocessed,duplicates,rejected", "0,0,0,0"]


async def test_reliability_counts_duplicate_and_rejected_webhooks(
    service: ServiceUnderTest,
) -> None:
    raw, headers = signed(service, event())
    assert (await post(service, raw, headers))[0] == 200
    assert (await post(service, raw, headers))[0] == 200  # the same webhook id again
    bad = {**headers, "webhook-signature": "v1,AAAA"}
    assert (await post(service, raw, bad))[0] == 401
    raw_junk, junk_headers = signed(service, b"{not json")
    assert (await post(service, raw_junk, junk_headers))[0] == 400

    service.clock.advance(1)  # the window ends at `now`, exclusive
    # Rejections are counted in memory and written once a second: they show up that late.
    async with asyncio.timeout(5):
        while True:
            status, body, _ = await service.call("GET", "/api/reports/reliability?since=1h")
            assert status == 200
            if body["sections"]["webhooks"]["rows"][0]["rejected"] == 2:
                break
            await asyncio.sleep(0.05)
    sections = body["sections"]
    assert sections["webhooks"]["rows"] == [
        {"received": 1, "unprocessed": 1, "duplicates": 1, "rejected": 2}
    ]
    assert sections["webhook_rejections"]["rows"] == [
        {"reason": "invalid_signature", "requests": 1},
        {"reason": "malformed_request", "requests": 1},
    ]


async def _text(service: ServiceUnderTest, path: str) -> tuple[int, str, Any]:
    async with service.http.get(f"{service.base_url}{path}", headers=service.auth) as response:
        return response.status, await response.text(), response.headers
