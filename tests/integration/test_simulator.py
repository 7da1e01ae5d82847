"""The Novita simulator over real HTTP on loopback, driven by a manual clock (no sleeping)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from service.clock import ManualClock
from service.signatures import sign
from service.simulator import Simulator
from tests.plugins.simulator import SimulatorFactory

PUSH_SECRET = "whsec_" + base64.b64encode(b"simulator-test-secret-key-32byte").decode()
GPU_BODY: dict[str, Any] = {
    "name": "job-1",
    "productId": "4090.16c62g",
    "gpuNum": 1,
    "rootfsSize": 50,
    "imageUrl": "pytorch/pytorch:2.4.0",
    "kind": "gpu",
    "ports": "8888/http, 22/tcp",
}


@pytest.fixture
async def http(sim_api_key: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {sim_api_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, sim: Simulator, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, sim.base_url + path, **kwargs) as resp:
        return resp.status, await resp.json()


async def create(http: aiohttp.ClientSession, sim: Simulator, **overrides: Any) -> str:
    status, body = await call(http, sim, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, **overrides})
    assert status == 200, body
    return str(body["id"])


async def get(http: aiohttp.ClientSession, sim: Simulator, instance_id: str) -> tuple[int, Any]:
    return await call(http, sim, "GET", "/gpu/instance", params={"instanceId": instance_id})


async def status_of(http: aiohttp.ClientSession, sim: Simulator, instance_id: str) -> str:
    code, body = await get(http, sim, instance_id)
    assert code == 200, body
    return str(body["status"])


async def advance(sim: Simulator, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    await sim.tick()


async def run_to_running(
    http: aiohttp.ClientSession, sim: Simulator, clock: ManualClock, **overrides: Any
) -> str:
    instance_id = await create(http, sim, **overrides)
    await advance(sim, clock, 10)
    assert await status_of(http, sim, instance_id) == "running"
    return instance_id


async def operate(
    http: aiohttp.ClientSession, sim: Simulator, action: str, instance_id: str
) -> tuple[int, Any]:
    return await call(http, sim, "POST", f"/gpu/instance/{action}",
                      json={"instanceId": instance_id})


def assert_error(body: Any, code: int, reason: str) -> None:
    assert set(body) == {"code", "reason", "message", "metadata"}
    assert body["code"] == code
    assert body["reason"] == reason
    assert isinstance(body["message"], str) and body["message"]


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic sim-key"},
     {"Authorization": "Bearer "}],
)
async def test_missing_or_invalid_key_answers_401_with_novita_body(
    simulator: Simulator, headers: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        simulator.base_url + "/products", headers=headers
    ) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert_error(body, 401, "UNAUTHORIZED")
    assert body["metadata"] == {}


async def test_no_configured_keys_accepts_any_bearer_token(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(api_keys=())
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.base_url + "/clusters",
                               headers={"Authorization": "Bearer anything"}) as resp:
            assert resp.status == 200
        async with session.get(sim.base_url + "/clusters") as resp:
            assert resp.status == 401


async def test_admin_routes_need_the_same_key(simulator: Simulator) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        simulator.admin_url + "/state"
    ) as resp:
        assert resp.status == 401


async def test_unknown_route_answers_404_with_error_body(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "GET", "/no/such/path")
    assert status == 404
    assert_error(body, 404, "NOT_FOUND")


# -- catalogue ------------------------------------------------------------------------------


async def test_clusters_seed_both_id_styles_and_region_code_names(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "GET", "/clusters")
    assert status == 200
    clusters = {c["id"]: c for c in body["data"]}
    assert clusters["as-sgp-2"]["name"] == "AS-SGP-02"
    assert clusters["5"]["name"] == "US-01"  # numeric id style (§5.1)
    names = {c["name"] for c in body["data"]}
    assert {"AS-SGP-02", "CN-HK-01", "AS-IN-01", "US-CA-06", "EU-DE-01"} <= names
    for cluster in body["data"]:
        assert set(cluster) >= {"id", "name", "availableGpuType", "supportNetworkStorage",
                                "supportInstanceNetwork"}
    assert "RTX 4090 24GB" in clusters["as-sgp-2"]["availableGpuType"]


async def test_products_have_novita_shapes_and_prices(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "GET", "/products")
    assert status == 200
    products = {p["id"]: p for p in body["data"]}
    rtx = products["4090.16c62g"]
    assert rtx["name"] == "RTX 4090 24GB"
    assert rtx["price"] == 35000 and isinstance(rtx["spotPrice"], str)
    assert rtx["regions"] == ["AS-SGP-02 (Singapore)"]
    assert rtx["availableDeploy"] is True
    assert rtx["monthlyPrice"][0] == {"price": 20000000, "month": 1}
    assert set(rtx["billingMethods"]) == {"onDemand", "monthly", "spot"}
    assert rtx["minRootFS"] == 10 and rtx["maxRootFS"] >= 100
    same_name = [p for p in body["data"] if p["name"] == "RTX 4090 24GB"]
    assert len({p["price"] for p in same_name}) > 1  # cheapest-across-regions is meaningful
    gpu_names = {p["name"] for p in body["data"]}
    assert {"RTX 3090 24GB", "A100 SXM4 80GB", "H100 SXM 80GB", "L40S 48GB"} <= gpu_names


@pytest.mark.parametrize(
    ("query", "expected_ids"),
    [
        ({"clusterId": "as-in-1"}, {"4090.18c.60g", "h100.sxm.80g.in"}),
        ({"productName": "rtx 4090", "clusterId": "5"}, {"4090.16c62g.us"}),
        ({"productName": "a100"}, {"a100.sxm4.80g", "a100.sxm4.80g.sg"}),
        ({"minCpuPerGpu": "18"}, {"4090.18c.60g", "h100.sxm.80g", "h100.sxm.80g.in"}),
        ({"minMemoryPerGpu": "200"}, {"h100.sxm.80g", "h100.sxm.80g.in"}),
        ({"minRootFSSize": "3000"}, {"h100.sxm.80g", "h100.sxm.80g.in"}),
        ({"billingMethod": "spot", "productName": "A100"}, {"a100.sxm4.80g"}),
        ({"billingMethod": "monthly", "productName": "4090"},
         {"4090.16c62g", "4090.16c96g.v2", "4090.16c62g.us"}),
        ({"gpuNum": "8", "clusterId": "5"}, {"4090.16c62g.us", "h100.sxm.80g"}),
    ],
)
async def test_products_honour_every_filter(
    simulator: Simulator, http: aiohttp.ClientSession, query: dict[str, str],
    expected_ids: set[str],
) -> None:
    status, body = await call(http, simulator, "GET", "/products", params=query)
    assert status == 200
    assert {p["id"] for p in body["data"]} == expected_ids


async def test_products_reject_out_of_range_filters(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "GET", "/products", params={"gpuNum": "9"})
    assert status == 400
    assert_error(body, 400, "VALIDATOR_PARAM")
    assert "gpuNum" in body["message"]


async def test_products_show_exhausted_capacity_as_not_deployable(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.set_capacity("as-sgp-2", 0, "4090.16c62g")
    _, body = await call(http, simulator, "GET", "/products", params={"clusterId": "as-sgp-2"})
    deployable = {p["id"]: p["availableDeploy"] for p in body["data"]}
    assert deployable["4090.16c62g"] is False
    assert deployable["3090.16c92g"] is True
    _, spot = await call(http, simulator, "GET", "/products",
                         params={"clusterId": "as-sgp-2", "billingMethod": "spot"})
    assert {p["id"]: p["availableDeploy"] for p in spot["data"]}["4090.16c62g"] is True


async def test_templates_use_capital_id_and_page(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "GET", "/template", params={"templateId": "212"})
    assert status == 200
    template = body["template"]
    assert template["Id"] == "212" and "id" not in template
    assert {"type": "http", "ports": [8888]} in template["ports"]
    assert {"type": "tcp", "ports": [22]} in template["ports"]
    assert template["envs"] and template["createdAt"].isdigit()
    status, page = await call(http, simulator, "GET", "/templates",
                              params={"pageSize": "2", "pageNum": "0"})
    assert status == 200
    assert len(page["template"]) == 2 and page["total"] >= 3
    assert all("Id" in t and "createTime" in t for t in page["template"])
    status, missing = await call(http, simulator, "GET", "/template",
                                 params={"templateId": "999"})
    assert status == 400
    assert_error(missing, 400, "TEMPLATE_NOT_FOUND")


async def test_registry_auths_list_plain_passwords_and_save(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    _, before = await call(http, simulator, "GET", "/repository/auths")
    assert all(set(a) == {"id", "name", "username", "password"} for a in before["data"])
    assert before["data"][0]["password"] == "ghp_simulated"
    status, saved = await call(http, simulator, "POST", "/repository/auth/save",
                               json={"name": "n", "username": "u", "password": "p"})
    assert (status, saved) == (200, {})
    _, after = await call(http, simulator, "GET", "/repository/auths")
    new = [a for a in after["data"] if a["name"] == "n"]
    assert len(new) == 1 and re.fullmatch(r"[a-z0-9]{32}", new[0]["id"])


# -- create ---------------------------------------------------------------------------------


async def test_create_returns_16_hex_id_and_ignores_unknown_fields(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, "rootfsSize": 5, "somethingNew": {"x": 1}})
    assert status == 200
    assert set(body) == {"id"} and re.fullmatch(r"[0-9a-f]{16}", body["id"])
    _, inst = await get(http, simulator, body["id"])
    assert inst["rootfsSize"] == 10  # documented: smaller sizes are raised to 10
    assert inst["status"] == "pending"
    assert (inst["cpuNum"], inst["memory"], inst["gpuNum"]) == ("16", "62", "1")
    assert simulator.requests_by_path["/gpu/instance/create"] == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ports": "2222/tcp"}, "ports"),
        ({"ports": "2224/http"}, "ports"),
        ({"ports": "70000/http"}, "ports"),
        ({"ports": "0/tcp"}, "ports"),
        ({"ports": "80/udp"}, "ports"),
        ({"ports": ", ".join(f"{p}/http" for p in range(8000, 8016))}, "ports"),
        ({"name": "x" * 256}, "name"),
        ({"gpuNum": 0}, "gpuNum"),
        ({"gpuNum": 9}, "gpuNum"),
        ({"gpuNum": "1"}, "gpuNum"),
        ({"imageUrl": ""}, "imageUrl"),
        ({"imageUrl": "x" * 501}, "imageUrl"),
        ({"rootfsSize": 10000}, "rootfsSize"),
        ({"rootfsSize": 600}, "rootfsSize"),  # above this product's maxRootFS
        ({"kind": "tpu"}, "kind"),
        ({"billingMode": "free"}, "billingMode"),
        ({"month": -1}, "month"),
        ({"envs": [{"key": "K", "value": "v"}] * 101}, "envs"),
        ({"envs": [{"key": "K" * 512, "value": "v"}]}, "key"),
        ({"command": "c" * 2048}, "command"),
        ({"clusterId": "mars-1"}, "clusterId"),
    ],
)
async def test_create_validation_names_the_field(
    simulator: Simulator, http: aiohttp.ClientSession, overrides: dict[str, Any], field: str
) -> None:
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, **overrides})
    assert status == 400
    assert_error(body, 400, "VALIDATOR_PARAM")
    assert field in body["message"]
    assert simulator.instances() == []


@pytest.mark.parametrize("missing", ["productId", "gpuNum", "rootfsSize", "imageUrl"])
async def test_create_requires_documented_fields(
    simulator: Simulator, http: aiohttp.ClientSession, missing: str
) -> None:
    body = {k: v for k, v in GPU_BODY.items() if k != missing}
    status, error = await call(http, simulator, "POST", "/gpu/instance/create", json=body)
    assert status == 400
    assert_error(error, 400, "VALIDATOR_PARAM")
    assert missing in error["message"]


async def test_create_limits_ports_and_tools_together(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    ports = ", ".join(f"{p}/http" for p in range(8000, 8014))
    tools = [{"name": "Jupyter", "port": "8888", "type": "http"},
             {"name": "Extra", "port": "9999", "type": "http"}]
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, "ports": ports, "tools": tools})
    assert status == 400 and "ports" in body["message"]
    status, _ = await call(http, simulator, "POST", "/gpu/instance/create",
                           json={**GPU_BODY, "ports": ports, "tools": tools[:1]})
    assert status == 200


async def test_create_business_errors(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, "productId": "no-such-product"})
    assert status == 400
    assert_error(body, 400, "RESOURCE_NOT_FOUND")
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, "productId": "a100.sxm4.80g.sg",
                                    "billingMode": "spot"})
    assert status == 400
    assert_error(body, 400, "UNSUPPORTED_BILLING_MODE")
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, "productId": "a100.sxm4.80g.sg", "month": 3,
                                    "billingMode": "onDemand"})
    assert status == 200  # month > 0 forces monthly, which this product offers
    _, inst = await get(http, simulator, body["id"])
    assert inst["billingMode"] == "monthly" and inst["endTime"] != "-1"


# -- lifecycle ------------------------------------------------------------------------------


async def test_create_walks_pending_to_running_on_the_clock(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await create(http, simulator)
    seen = [await status_of(http, simulator, instance_id)]
    for seconds in (0.5, 1.0, 2.0, 3.0):  # default dwell of pending, toCreate, creating, pulling
        await advance(simulator, sim_clock, seconds)
        seen.append(await status_of(http, simulator, instance_id))
    assert seen == ["pending", "toCreate", "creating", "pulling", "running"]
    _, inst = await get(http, simulator, instance_id)
    assert [m["port"] for m in inst["portMappings"]] == [8888, 22]
    assert inst["lastStartedAt"].isdigit() and inst["lastStoppedAt"] == ""
    assert inst["connectComponentSSH"]["sshCommand"].startswith("ssh -p ")
    assert inst["spotStatus"] == "" and inst["spotReclaimTime"] == "0"


async def test_reads_see_due_transitions_without_an_explicit_tick(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await create(http, simulator)
    sim_clock.advance(30)
    assert await status_of(http, simulator, instance_id) == "running"


async def test_stop_start_restart_cycle(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await run_to_running(http, simulator, sim_clock)
    status, body = await operate(http, simulator, "stop", instance_id)
    assert (status, body) == (200, {"instanceId": instance_id, "state": "toStop"})
    _, inst = await get(http, simulator, instance_id)
    assert inst["status"] == "toStop" and inst["portMappings"] == []
    await advance(simulator, sim_clock, 1.0)
    assert await status_of(http, simulator, instance_id) == "stopping"
    await advance(simulator, sim_clock, 2.0)
    _, inst = await get(http, simulator, instance_id)
    assert inst["status"] == "exited" and inst["lastStoppedAt"].isdigit()

    status, body = await operate(http, simulator, "start", instance_id)
    assert (status, body) == (200, {"instanceId": instance_id, "state": "toStart"})
    await advance(simulator, sim_clock, 1.0)
    assert await status_of(http, simulator, instance_id) == "starting"
    await advance(simulator, sim_clock, 2.0)
    assert await status_of(http, simulator, instance_id) == "running"

    status, body = await operate(http, simulator, "restart", instance_id)
    assert (status, body) == (200, {})
    assert await status_of(http, simulator, instance_id) == "toRestart"
    await advance(simulator, sim_clock, 1.0)
    assert await status_of(http, simulator, instance_id) == "restarting"
    await advance(simulator, sim_clock, 2.0)
    assert await status_of(http, simulator, instance_id) == "running"


@pytest.mark.parametrize("action", ["start", "migrate"])
async def test_illegal_transitions_answer_invalid_state_change(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock, action: str
) -> None:
    instance_id = await run_to_running(http, simulator, sim_clock)
    status, body = await operate(http, simulator, action, instance_id)
    assert status == 400
    assert_error(body, 400, "CONFLICT")
    assert body["message"] == "invalid state change"


async def test_stop_while_creating_is_refused(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    instance_id = await create(http, simulator)
    status, body = await operate(http, simulator, "stop", instance_id)
    assert status == 400 and body["message"] == "invalid state change"


async def test_migrate_exited_instance_runs_again(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await run_to_running(http, simulator, sim_clock)
    await operate(http, simulator, "stop", instance_id)
    await advance(simulator, sim_clock, 5)
    status, body = await operate(http, simulator, "migrate", instance_id)
    assert (status, body) == (200, {})
    assert await status_of(http, simulator, instance_id) == "migrating"
    await advance(simulator, sim_clock, 3)
    assert await status_of(http, simulator, instance_id) == "running"


async def test_delete_lingers_as_removed_then_not_found(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await create(http, simulator)  # delete works from any state
    assert await operate(http, simulator, "delete", instance_id) == (200, {})
    assert await status_of(http, simulator, instance_id) == "toRemove"
    await advance(simulator, sim_clock, 1)
    assert await status_of(http, simulator, instance_id) == "removing"
    await advance(simulator, sim_clock, 2)
    assert await status_of(http, simulator, instance_id) == "removed"
    _, listed = await call(http, simulator, "GET", "/gpu/instances")
    assert listed["total"] == 1 and listed["instances"][0]["status"] == "removed"
    await advance(simulator, sim_clock, 30)
    status, body = await get(http, simulator, instance_id)
    assert status == 400
    assert_error(body, 400, "RESOURCE_NOT_FOUND")
    status, body = await operate(http, simulator, "stop", instance_id)
    assert status == 400 and body["reason"] == "RESOURCE_NOT_FOUND"


async def test_not_found_can_answer_404(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(not_found_status=404)
    status, body = await get(http, sim, "0123456789abcdef")
    assert status == 404
    assert_error(body, 404, "RESOURCE_NOT_FOUND")


async def test_dwell_scale_zero_runs_on_the_next_tick(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(dwell_scale=0)
    instance_id = await create(http, sim)
    await sim.tick()
    assert await status_of(http, sim, instance_id) == "running"


# -- listing --------------------------------------------------------------------------------


async def test_list_pages_filters_and_counts(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    ids = [await create(http, simulator, name=f"train-{n:02d}") for n in range(12)]
    other = await create(http, simulator, name="infer-1", productId="3090.16c92g")
    await operate(http, simulator, "delete", other)

    _, first = await call(http, simulator, "GET", "/gpu/instances")
    assert first["total"] == 13 and len(first["instances"]) == 10
    # Default reading: pageNum counts from 0 (the docs' "pageNum >= 0").
    _, page0 = await call(http, simulator, "GET", "/gpu/instances", params={"pageNum": "0"})
    _, page1 = await call(http, simulator, "GET", "/gpu/instances",
                          params={"pageNum": "1", "pageSize": "10"})
    assert page0 == first
    seen = [i["id"] for i in page0["instances"]] + [i["id"] for i in page1["instances"]]
    assert sorted(seen) == sorted([*ids, other])  # every instance exactly once

    _, named = await call(http, simulator, "GET", "/gpu/instances", params={"name": "TRAIN-1"})
    assert named["total"] == 2  # fuzzy: train-10, train-11
    _, by_product = await call(http, simulator, "GET", "/gpu/instances",
                               params={"productName": "3090"})
    assert [i["id"] for i in by_product["instances"]] == [other]
    _, by_status = await call(http, simulator, "GET", "/gpu/instances",
                              params={"status": "toRemove"})
    assert by_status["total"] == 1
    item = first["instances"][0]
    assert isinstance(item["cpuNum"], str) and isinstance(item["gpuNum"], str)
    assert "portMappings" in item and "spotReclaimTime" in item


# -- capacity -------------------------------------------------------------------------------


async def test_capacity_exhaustion_and_separate_spot_pool(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.set_capacity("as-sgp-2", 1, "4090.16c62g")
    await create(http, simulator)
    status, body = await call(http, simulator, "POST", "/gpu/instance/create", json=GPU_BODY)
    assert status == 400
    assert_error(body, 400, "INSUFFICIENT_RESOURCE")
    await create(http, simulator, billingMode="spot")  # the spot pool is separate
    simulator.set_capacity("as-sgp-2", 0, "4090.16c62g", spot=True)
    status, body = await call(http, simulator, "POST", "/gpu/instance/create",
                              json={**GPU_BODY, "billingMode": "spot"})
    assert status == 400 and body["reason"] == "INSUFFICIENT_RESOURCE"


async def test_capacity_set_through_admin_route(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.put(simulator.admin_url + "/capacity",
                        json={"clusterId": "as-sgp-2", "count": 0}) as resp:
        assert resp.status == 200
    status, body = await call(http, simulator, "POST", "/gpu/instance/create", json=GPU_BODY)
    assert status == 400 and body["reason"] == "INSUFFICIENT_RESOURCE"


async def test_empty_cluster_id_picks_a_cluster_with_capacity(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.set_capacity("as-sgp-2", 0, "3090.16c92g")
    instance_id = await create(http, simulator, productId="3090.16c92g", clusterId="")
    _, inst = await get(http, simulator, instance_id)
    assert (inst["clusterId"], inst["clusterName"]) == ("cn-hongkong-1", "CN-HK-01")


async def test_stopping_releases_capacity_and_start_can_then_fail(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    simulator.set_capacity("as-sgp-2", 1, "4090.16c62g")
    first = await run_to_running(http, simulator, sim_clock)
    await operate(http, simulator, "stop", first)
    await advance(simulator, sim_clock, 5)
    assert simulator.capacity("as-sgp-2", "4090.16c62g") == 1
    await create(http, simulator)  # someone else takes the node
    status, body = await operate(http, simulator, "start", first)
    assert status == 400
    assert_error(body, 400, "INSUFFICIENT_RESOURCE")
    assert await status_of(http, simulator, first) == "exited"


# -- spot reclaim ---------------------------------------------------------------------------


async def test_spot_reclaim_sequence_ends_exited(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await run_to_running(http, simulator, sim_clock, billingMode="spot")
    _, inst = await get(http, simulator, instance_id)
    assert (inst["spotStatus"], inst["spotReclaimTime"]) == ("running", "0")
    simulator.reclaim(instance_id)
    _, inst = await get(http, simulator, instance_id)
    assert inst["spotStatus"] == "notified" and inst["status"] == "running"
    assert inst["spotReclaimTime"] != "0"
    await advance(simulator, sim_clock, 5)
    _, inst = await get(http, simulator, instance_id)
    assert inst["spotStatus"] == "reclaiming"
    await advance(simulator, sim_clock, 3)
    _, inst = await get(http, simulator, instance_id)
    assert (inst["status"], inst["spotStatus"]) == ("exited", "terminated")
    assert inst["portMappings"] == []


async def test_reclaim_through_admin_route_only_for_spot(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    on_demand = await run_to_running(http, simulator, sim_clock)
    async with http.post(f"{simulator.admin_url}/instances/{on_demand}/reclaim") as resp:
        assert resp.status == 400
    spot = await run_to_running(http, simulator, sim_clock, billingMode="spot")
    async with http.post(f"{simulator.admin_url}/instances/{spot}/reclaim") as resp:
        assert resp.status == 200
    stored = simulator.instance(spot)
    assert stored is not None and stored["spotStatus"] == "notified"
    assert stored.spot_status == "notified"


async def test_random_reclaims_follow_the_configured_rate(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    sim = await simulator_factory(spot_reclaim_rate=1.0)
    instance_id = await create(http, sim, billingMode="spot")
    await advance(sim, sim_clock, 10)  # reaches running on this tick
    await sim.tick()
    _, inst = await get(http, sim, instance_id)
    assert inst["spotStatus"] == "notified"


# -- endpoints ------------------------------------------------------------------------------


async def _tcp_accepts(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except OSError:
        return False
    try:
        banner = await asyncio.wait_for(reader.readline(), 2)
        return banner.startswith(b"SSH-2.0-")
    finally:
        writer.close()
        await writer.wait_closed()


async def _http_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        await resp.read()
        return resp.status


async def test_endpoints_answer_only_once_the_app_is_up(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await run_to_running(http, simulator, sim_clock)
    _, inst = await get(http, simulator, instance_id)
    before = {m["type"]: m["endpoint"] for m in inst["portMappings"]}
    assert await _http_status(http, before["http"]) == 200  # 10 s later the app is up
    assert await _tcp_accepts(before["tcp"])
    # Restart, to watch the app come up from scratch.
    await operate(http, simulator, "restart", instance_id)
    assert await _http_status(http, before["http"]) == 502
    assert not await _tcp_accepts(before["tcp"])
    await advance(simulator, sim_clock, 3)  # toRestart 1 s + restarting 2 s: running
    _, inst = await get(http, simulator, instance_id)
    assert inst["status"] == "running"
    http_endpoint = next(m["endpoint"] for m in inst["portMappings"] if m["type"] == "http")
    tcp_endpoint = next(m["endpoint"] for m in inst["portMappings"] if m["type"] == "tcp")
    assert await _http_status(http, http_endpoint) == 502  # running, app not up yet
    assert not await _tcp_accepts(tcp_endpoint)
    await advance(simulator, sim_clock, 2)
    assert await _http_status(http, http_endpoint) == 200
    assert await _tcp_accepts(tcp_endpoint)

    await operate(http, simulator, "stop", instance_id)
    assert await _http_status(http, http_endpoint) == 502
    assert not await _tcp_accepts(tcp_endpoint)


async def test_an_app_that_never_comes_up(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await create(http, simulator)
    async with http.post(f"{simulator.admin_url}/instances/{instance_id}/app",
                         json={"startupDelay": None}) as resp:
        assert resp.status == 200
    await advance(simulator, sim_clock, 600)
    _, inst = await get(http, simulator, instance_id)
    assert inst["status"] == "running"
    http_endpoint = next(m["endpoint"] for m in inst["portMappings"] if m["type"] == "http")
    assert await _http_status(http, http_endpoint) == 502
    simulator.set_app_startup_delay(instance_id, 0)
    await simulator.tick()
    assert await _http_status(http, http_endpoint) == 200


# -- faults ---------------------------------------------------------------------------------


async def test_error_rate_answers_500_unknown(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.faults.error_rate = 1.0
    status, body = await call(http, simulator, "GET", "/clusters")
    assert status == 500
    assert_error(body, 500, "UNKNOWN")


async def test_rate_limit_rate_answers_429_with_retry_after(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.faults.rate_limit_rate = 1.0
    simulator.faults.retry_after = 7
    async with http.get(simulator.base_url + "/clusters") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        assert_error(await resp.json(), 429, "RATE_LIMIT_EXCEEDED")


async def test_rate_limit_per_minute_uses_the_clock(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    simulator.faults.rate_limit_per_minute = 2
    assert (await call(http, simulator, "GET", "/clusters"))[0] == 200
    sim_clock.advance(10)
    assert (await call(http, simulator, "GET", "/clusters"))[0] == 200
    async with http.get(simulator.base_url + "/clusters") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "50"
    sim_clock.advance(50)
    assert (await call(http, simulator, "GET", "/clusters"))[0] == 200


async def test_hung_requests_outlast_the_client_timeout(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.faults.hang_rate = 1.0
    simulator.faults.hang_seconds = 60
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(simulator.base_url + "/clusters",
                            timeout=aiohttp.ClientTimeout(total=0.2)):
            pass
    simulator.faults.hang_rate = 0.0
    assert (await call(http, simulator, "GET", "/clusters"))[0] == 200


async def test_create_500_after_create_still_creates_exactly_one_instance(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.faults.create_500_after_create = 1
    status, body = await call(http, simulator, "POST", "/gpu/instance/create", json=GPU_BODY)
    assert status == 500
    assert_error(body, 500, "UNKNOWN")
    _, listed = await call(http, simulator, "GET", "/gpu/instances",
                           params={"name": GPU_BODY["name"]})
    assert listed["total"] == 1
    assert simulator.requests_by_path["/gpu/instance/create"] == 1
    assert simulator.faults.create_500_after_create == 0
    status, _ = await call(http, simulator, "POST", "/gpu/instance/create", json=GPU_BODY)
    assert status == 200


async def test_faults_are_settable_through_the_admin_route(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.put(simulator.admin_url + "/faults", json={"error_rate": 1.0}) as resp:
        assert resp.status == 200
        assert (await resp.json())["error_rate"] == 1.0
    assert (await call(http, simulator, "GET", "/clusters"))[0] == 500
    async with http.get(simulator.admin_url + "/state") as resp:
        assert resp.status == 200  # admin routes are never faulted
    async with http.put(simulator.admin_url + "/faults", json={"nonsense": 1}) as resp:
        assert resp.status == 400


async def test_same_seed_gives_same_fault_sequence_and_ids(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    outcomes = []
    for _ in range(2):
        sim = await simulator_factory(seed=99)
        instance_id = await create(http, sim)
        sim.faults.error_rate = 0.5
        statuses = [(await call(http, sim, "GET", "/clusters"))[0] for _ in range(12)]
        outcomes.append((instance_id, statuses))
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0][1]) == {200, 500}


# -- admin hooks ----------------------------------------------------------------------------


async def test_status_jump_hook_and_reset(
    simulator: Simulator, http: aiohttp.ClientSession, sim_clock: ManualClock
) -> None:
    instance_id = await create(http, simulator)
    async with http.post(
        f"{simulator.admin_url}/instances/{instance_id}/status",
        json={"status": "exited", "hold": True,
              "statusError": {"state": "pullImageFailed", "message": "manifest unknown"}},
    ) as resp:
        assert resp.status == 200
    _, inst = await get(http, simulator, instance_id)
    assert inst["status"] == "exited"
    assert inst["statusError"] == {"state": "pullImageFailed", "message": "manifest unknown"}
    async with http.get(simulator.admin_url + "/state") as resp:
        state = await resp.json()
    assert state["byStatus"] == {"exited": 1}
    async with http.post(simulator.admin_url + "/reset") as resp:
        assert resp.status == 200
    assert simulator.instances() == [] and simulator.request_count == 0


# -- pushed events --------------------------------------------------------------------------


class Receiver:
    """A real HTTP receiver for pushed events."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield recv, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_status_changes_are_pushed_signed(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession, sim_clock: ManualClock,
    receiver: tuple[Receiver, str],
) -> None:
    recv, url = receiver
    # The standardwebhooks package checks timestamps against the wall clock: start there.
    sim_clock.advance_to(datetime.now(UTC))
    sim = await simulator_factory(push_url=url, push_secret=PUSH_SECRET)
    instance_id = await create(http, sim, billingMode="spot")
    await advance(sim, sim_clock, 10)
    sim.reclaim(instance_id)
    await advance(sim, sim_clock, 10)
    await asyncio.wait_for(sim.drain_push(), 5)

    verifier = Webhook(PUSH_SECRET)
    events = [verifier.verify(body, headers) for body, headers in recv.received]
    statuses = [e["data"]["status"] for e in events if e["type"] == "instance.status_changed"]
    assert statuses == ["pending", "toCreate", "creating", "pulling", "running", "exited"]
    spot = [e["data"]["spotStatus"] for e in events if e["type"] == "instance.spot_reclaim"]
    assert spot == ["notified", "reclaiming", "terminated"]
    first = events[0]
    assert first["data"]["instanceId"] == instance_id and first["data"]["name"] == "job-1"
    assert first["timestamp"].endswith("Z") and first["data"]["observedAt"].endswith("Z")
    assert len({h["webhook-id"] for _, h in recv.received}) == len(recv.received)
    # the signing primitive agrees with the standardwebhooks package
    body, headers = recv.received[0]
    key = base64.b64decode(PUSH_SECRET.removeprefix("whsec_"))
    expected = sign(key, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    assert headers["webhook-signature"] == expected


async def test_push_drop_and_duplicate_rates(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession, sim_clock: ManualClock,
    receiver: tuple[Receiver, str],
) -> None:
    recv, url = receiver
    dropping = await simulator_factory(push_url=url, push_secret=PUSH_SECRET,
                                       push_drop_rate=1.0)
    await create(http, dropping)
    await advance(dropping, sim_clock, 10)
    await asyncio.wait_for(dropping.drain_push(), 5)
    assert recv.received == []
    assert dropping.push_stats is not None and dropping.push_stats.dropped == 5

    duplicating = await simulator_factory(push_url=url, push_secret=PUSH_SECRET,
                                          push_duplicate_rate=1.0)
    await create(http, duplicating)
    await asyncio.wait_for(duplicating.drain_push(), 5)
    assert len(recv.received) == 2
    (body_a, headers_a), (body_b, headers_b) = recv.received
    assert headers_a["webhook-id"] == headers_b["webhook-id"] and body_a == body_b
    assert json.loads(body_a)["data"]["status"] == "pending"


async def test_push_reorder_delivers_held_events_late_but_never_loses_them(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession, sim_clock: ManualClock,
    receiver: tuple[Receiver, str],
) -> None:
    recv, url = receiver
    sim = await simulator_factory(push_url=url, push_secret=PUSH_SECRET, push_reorder_rate=0.5)
    await create(http, sim)
    for seconds in (0.5, 1.0, 2.0, 3.0, 0.0, 0.0):  # two extra ticks release held events
        await advance(sim, sim_clock, seconds)
    await asyncio.wait_for(sim.drain_push(), 5)
    natural = ["pending", "toCreate", "creating", "pulling", "running"]
    statuses = [json.loads(body)["data"]["status"] for body, _ in recv.received]
    assert sorted(statuses) == sorted(natural)
    assert statuses != natural
    assert sim.push_stats is not None and sim.push_stats.reordered > 0


async def test_push_failures_never_break_the_simulator(
    simulator_factory: SimulatorFactory, http: aiohttp.ClientSession, sim_clock: ManualClock,
    unused_tcp_port: int,
) -> None:
    sim = await simulator_factory(push_url=f"http://127.0.0.1:{unused_tcp_port}/nothing",
                                  push_secret=PUSH_SECRET)
    instance_id = await create(http, sim)
    await advance(sim, sim_clock, 10)
    await asyncio.wait_for(sim.drain_push(), 5)
    assert sim.push_stats is not None and sim.push_stats.failed == 5
    assert await status_of(http, sim, instance_id) == "running"
