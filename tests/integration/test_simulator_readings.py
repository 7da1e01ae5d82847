"""The simulator's readings: each switch changes what goes on the wire, set at start
(`simulate` options), at run time (`PUT /_sim/readings`), and restored by a reset."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.simulator import Simulator
from service.simulator.readings import Readings
from tests.plugins.simulator import SimulatorFactory

GPU_BODY = {
    "name": "wire",
    "productId": "4090.16c62g",
    "gpuNum": 1,
    "rootfsSize": 20,
    "imageUrl": "pytorch/pytorch:2.4.0",
    "kind": "gpu",
}


@pytest.fixture
async def http(sim_api_key: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {sim_api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


async def raw(
    http: aiohttp.ClientSession, url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, str, Any]:
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        body = await response.json(content_type=None) if response.content_type.endswith(
            "json") and text else None
        return response.status, text, body


async def set_readings(http: aiohttp.ClientSession, sim: Simulator, **changes: str) -> Any:
    status, _, body = await raw(http, sim.admin_url + "/readings", "PUT", json=changes)
    assert status == 200, body
    return body


async def test_readings_change_at_run_time_and_reset_restores_them(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    v1 = simulator.base_url
    _, _, created = await raw(http, v1 + "/gpu/instance/create", "POST", json=GPU_BODY)
    instance_id = created["id"]
    assert (await set_readings(http, simulator, not_found="404-text"))["not_found"] == "404-text"
    status, text, body = await raw(http, v1 + "/gpu/instance?instanceId=ffffffffffffffff")
    assert (status, body) == (404, None) and "not found" in text

    await set_readings(http, simulator, error_reason="message", not_found="404-json")
    status, _, body = await raw(http, v1 + "/gpu/instance?instanceId=ffffffffffffffff")
    assert status == 404 and "reason" not in body
    assert body["message"].startswith("RESOURCE_NOT_FOUND:")

    await set_readings(http, simulator, action_body="none")
    simulator.set_status(instance_id, "running", hold=True)
    status, text, _ = await raw(
        http, v1 + "/gpu/instance/stop", "POST", json={"instanceId": instance_id}
    )
    assert (status, text) == (200, "")

    await set_readings(http, simulator, page_base="1-strict")
    status, _, _ = await raw(http, v1 + "/gpu/instances?pageNum=0")
    assert status == 400

    state = await raw(http, simulator.admin_url + "/state")
    assert state[2]["readings"]["page_base"] == "1-strict"
    await raw(http, simulator.admin_url + "/reset", "POST")
    _, _, readings = await raw(http, simulator.admin_url + "/readings")
    assert readings == Readings().to_json()


@pytest.mark.parametrize(
    "changes", [{"page_base": "2"}, {"colour": "blue"}, {"regions": 1}], ids=str
)
async def test_an_unknown_reading_is_refused(
    simulator: Simulator, http: aiohttp.ClientSession, changes: dict[str, Any]
) -> None:
    status, _, body = await raw(http, simulator.admin_url + "/readings", "PUT", json=changes)
    assert status == 400 and body["reason"] == "VALIDATOR_PARAM"
    assert simulator.readings == Readings()


@pytest.mark.parametrize(
    ("form", "first"),
    [
        ("names", "AS-SGP-02 (Singapore)"),
        ("codes", "AS-SGP-02"),
        ("ids", "as-sgp-2"),
        ("objects", {"id": "as-sgp-2", "name": "AS-SGP-02"}),
    ],
)
async def test_product_regions_in_each_form(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession, form: str, first: Any
) -> None:
    sim = await simulator_factory(readings=Readings(regions=form))
    _, _, body = await raw(http, sim.base_url + "/products?productName=4090")
    product = next(p for p in body["data"] if p["id"] == "4090.16c62g")
    assert product["regions"] == [first]
    no_spot = await raw(http, sim.base_url + "/products")
    eu = next(p for p in no_spot[2]["data"] if p["id"] == "3090.8c46g.eu")
    assert eu["spotPrice"] == "0" and isinstance(product["spotPrice"], str)


@pytest.mark.parametrize(
    ("name_filter", "query", "listed"),
    [
        ("substring", "wire-1", ["a-wire-1"]),
        ("exact", "wire-1", []),
        ("exact", "a-wire-1", ["a-wire-1"]),
        ("ignored", "wire-1", ["a-wire-1", "b-other"]),
    ],
)
async def test_the_list_name_filter_in_each_form(
    simulator_factory: SimulatorFactory,
    http: aiohttp.ClientSession,
    name_filter: str,
    query: str,
    listed: list[str],
) -> None:
    sim = await simulator_factory(readings=Readings(name_filter=name_filter))
    for name in ("a-wire-1", "b-other"):
        await raw(http, sim.base_url + "/gpu/instance/create", "POST",
                  json={**GPU_BODY, "name": name})
    _, _, body = await raw(http, sim.base_url + f"/gpu/instances?name={query}")
    assert sorted(i["name"] for i in body["instances"]) == listed


async def test_network_storages_list_and_placement(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    _, _, listed = await raw(http, simulator.base_url + "/networkstorages/list")
    assert listed["total"] == 2
    de = next(n for n in listed["data"] if n["clusterId"] == "eu-de-01")
    assert set(de) == {"storageId", "storageName", "storageSize", "clusterId", "clusterName",
                       "price"}
    body = {**GPU_BODY, "productId": "a100.sxm4.80g",
            "networkStorages": [{"Id": de["storageId"], "mountPoint": "/ckpt"}]}
    _, _, created = await raw(http, simulator.base_url + "/gpu/instance/create", "POST",
                              json=body)
    made = simulator.instance(created["id"])
    assert made is not None and made.cluster_id == "eu-de-01"
    wrong = {**body, "clusterId": "us-ca-06"}
    status, _, refused = await raw(http, simulator.base_url + "/gpu/instance/create", "POST",
                                   json=wrong)
    assert (status, refused["reason"]) == (400, "NETWORK_STORAGE_UNAVAILABLE")
    missing = {**GPU_BODY, "networkStorages": [{"Id": "nope"}]}
    status, _, refused = await raw(http, simulator.base_url + "/gpu/instance/create", "POST",
                                   json=missing)
    assert (status, refused["reason"]) == (400, "NETWORK_STORAGE_NOT_FOUND")


async def test_simulate_options_set_the_readings(http: aiohttp.ClientSession) -> None:
    """`novita-lifecycle simulate` as a real process, every reading switch given."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "simulate", "--port", "0", "--page-base", "1",
        "--not-found", "404-json", "--error-reason", "message", "--regions", "ids",
        "--action-body", "empty", "--name-filter", "exact",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 30)
        match = re.search(r"(http://\S+/gpu-instance/openapi/v1)", first.decode())
        assert match, first
        base = match.group(1)
        admin = base.replace("/gpu-instance/openapi/v1", "/_sim")
        _, _, readings = await raw(http, admin + "/readings")
        assert readings == {
            "page_base": "1", "not_found": "404-json", "error_reason": "message",
            "regions": "ids", "action_body": "empty", "name_filter": "exact",
        }
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
