"""The client and the service against every reading of Novita's ambiguous API.

Each test runs once per simulator reading (`service.simulator.readings.every_reading`: the
defaults, then each other value of each switch): page base 0/1/1-strict, not-found as
400/404-JSON/404-text, errors with or without `reason`, product regions as names, codes,
cluster ids or objects, action answers with a state, `{}` or no body, and the list's name
filter as substring, exact or ignored. All over real loopback HTTP on a ManualClock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.clock import ManualClock
from service.db import claims
from service.db.engine import Database
from service.domain import Status
from service.novita import (
    CircuitBreaker,
    CreateInstanceRequest,
    NovitaCapacityError,
    NovitaClient,
    NovitaCudaIncompatibleError,
    NovitaInvalidStateError,
    NovitaNotFoundError,
    PortSpec,
)
from service.provisioning.naming import id_marker, provider_name
from service.provisioning.selection import SelectionRequest, select_candidates
from service.simulator import Simulator
from service.simulator.readings import Readings, every_reading
from tests.plugins.service import ServiceUnderTest
from tests.plugins.simulator import SimulatorFactory
from tests.support.lifecycle import Workers, history, status_of
from tests.support.provisioning import (
    ClockSleep,
    add_instance,
    load,
    make_provisioner,
)
from tests.support.readiness import make_readiness

READINGS = every_reading()


@pytest.fixture(params=[r for _, r in READINGS], ids=[name for name, _ in READINGS])
def reading(request: pytest.FixtureRequest) -> Readings:
    readings: Readings = request.param
    return readings.copy()


@pytest.fixture
async def simulator(simulator_factory: SimulatorFactory, reading: Readings) -> Simulator:
    """Overrides the plugin's: the simulator plays this module's reading."""
    return await simulator_factory(readings=reading, capacity_on_demand=400)


@pytest.fixture
async def client(
    simulator: Simulator, sim_api_key: str, sim_clock: ManualClock
) -> AsyncIterator[NovitaClient]:
    async with NovitaClient(
        simulator.base_url,
        sim_api_key,
        clock=sim_clock,
        sleep=ClockSleep(sim_clock),
        breaker=CircuitBreaker(failure_threshold=100, clock=sim_clock),
        rate_limit_per_minute=100_000,
    ) as novita:
        yield novita


def create_request(name: str, **overrides: Any) -> CreateInstanceRequest:
    fields: dict[str, Any] = {
        "name": name,
        "product_id": "4090.16c62g",
        "rootfs_size": 60,
        "image_url": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
        "ports": [PortSpec(port=8888, type="http")],
        "cluster_id": "as-sgp-2",
    }
    return CreateInstanceRequest.model_validate(fields | overrides)


async def settle(simulator: Simulator, clock: ManualClock, seconds: float = 60.0) -> None:
    for _ in range(int(seconds // 5)):
        clock.advance(5)
        await simulator.tick()


# -- the client's contract ------------------------------------------------------------------


async def test_catalogue_parses_and_selection_finds_every_region(client: NovitaClient) -> None:
    clusters = await client.list_clusters()
    products = await client.list_products(billing_method="onDemand")
    assert any(p.id == "4090.16c62g" for p in products)
    request = SelectionRequest(
        product_name="RTX 4090 24GB",
        product_id=None,
        billing_mode="onDemand",
        gpu_num=1,
        rootfs_size=60,
    )
    candidates = select_candidates(request, products, clusters)
    # Singapore (4090.16c62g), Hong Kong and the two US clusters (4090.16c62g.us).
    assert {(c.region, c.product.id) for c in candidates} >= {
        ("AS-SGP-02", "4090.16c62g"),
        ("US-CA-06", "4090.16c62g.us"),
    }
    assert candidates[0].region == "AS-SGP-02"
    spot = await client.list_products(billing_method="spot")
    no_spot = next(p for p in products if p.id == "3090.8c46g.eu")
    assert no_spot.spot_price is None and not any(p.id == no_spot.id for p in spot)


async def test_missing_instance_and_template_are_not_found(client: NovitaClient) -> None:
    await client.list_clusters()  # a first answer confirms the base URL
    with pytest.raises(NovitaNotFoundError):
        await client.get_instance("0123456789abcdef")
    with pytest.raises(NovitaNotFoundError):
        await client.get_template("99999")


async def test_error_tokens_are_read_with_or_without_reason(
    client: NovitaClient, simulator: Simulator
) -> None:
    simulator.set_capacity("as-sgp-2", 0, "4090.16c62g")
    with pytest.raises(NovitaCapacityError) as capacity:
        await client.create_instance(create_request("full"))
    assert capacity.value.reason == "INSUFFICIENT_RESOURCE"
    with pytest.raises(NovitaCudaIncompatibleError) as cuda:
        await client.create_instance(
            create_request("old-cuda", product_id="26", cluster_id="5", min_cuda_version="12.4")
        )
    assert cuda.value.reason == "CUDA_VERSION_INCOMPATIBLE"


async def test_actions_answered_with_any_body_and_lost_answers_are_conflicts(
    client: NovitaClient, simulator: Simulator, sim_clock: ManualClock
) -> None:
    instance_id = await client.create_instance(create_request("actions"))
    await settle(simulator, sim_clock)
    await client.stop_instance(instance_id)
    with pytest.raises(NovitaInvalidStateError):  # what a retry of a landed stop is told
        await client.stop_instance(instance_id)
    await settle(simulator, sim_clock)
    assert (await client.get_instance(instance_id)).status == "exited"
    await client.start_instance(instance_id)
    await settle(simulator, sim_clock)
    await client.restart_instance(instance_id)
    await client.delete_instance(instance_id)
    await settle(simulator, sim_clock)
    with pytest.raises(NovitaNotFoundError):
        await client.get_instance(instance_id)


async def test_listing_reads_every_instance_once_whatever_the_page_base(
    client: NovitaClient, simulator: Simulator
) -> None:
    made = {await client.create_instance(create_request(f"fleet-{n:03d}")) for n in range(121)}
    simulator.requests_by_path.clear()

    seen = [i.id async for i in client.iter_instances(page_size=50)]

    assert sorted(seen) == sorted(made)
    assert client.page_base == (0 if simulator.readings.page_base == "0" else 1)
    # Three pages, plus the one read of page 0 that told the base was 1 (an alias of
    # page 1, or refused).
    extra = 0 if simulator.readings.page_base == "0" else 1
    assert simulator.requests_by_path["/gpu/instances"] == 3 + extra
    again = [i.id async for i in client.iter_instances(page_size=50)]
    assert sorted(again) == sorted(made)


async def test_lookup_by_name_finds_ours_behind_150_foreign_instances(
    client: NovitaClient,
) -> None:
    ours = await client.create_instance(create_request("mine-inst-00ff"))
    for n in range(150):
        await client.create_instance(create_request(f"foreign-{n:03d}"))

    found = await client.find_instances_named("inst-00ff", lambda i: i.name.endswith("00ff"))

    assert [i.id for i in found] == [ours]


# -- the service ----------------------------------------------------------------------------


async def test_lifecycle_create_ready_stop_start_delete(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    readiness = make_readiness(service.resources.database, service.clock)
    body = {"name": "matrix", "productName": "RTX 4090 24GB", "templateId": "212"}
    status, created, _ = await service.call("POST", "/api/instances", json=body)
    assert status == 202
    instance_id = created["id"]
    await workers.provisioner.run_once()
    await workers.settle()
    await readiness.run_once()
    assert (await status_of(service, instance_id))["status"] == "ready"

    path = f"/api/instances/{instance_id}"
    for action, requested, confirmed in [
        ("stop", "stopping", "stopped"),
        ("start", "starting", "running"),
    ]:
        status, moved, _ = await service.call("POST", f"{path}/{action}")
        assert status == 202 and moved["status"] == requested, (action, moved)
        await workers.settle()
        assert (await status_of(service, instance_id))["status"] == confirmed, action
    await readiness.run_once()
    assert (await status_of(service, instance_id))["status"] == "ready"

    status, deleting, _ = await service.call("DELETE", path)
    assert status == 202 and deleting["status"] == "deleting"
    await workers.settle(seconds=30)
    assert (await status_of(service, instance_id))["status"] == "deleted"
    kinds = [(e["kind"], e["source"]) for e in await history(service, instance_id)]
    for kind in ("stop_requested", "start_requested", "delete_requested"):
        assert (kind, "api") in kinds
    assert service.simulator.requests_by_path["/gpu/instance/create"] == 1


async def test_ambiguous_create_with_150_foreign_instances_ahead_is_adopted_not_repeated(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    client: NovitaClient,
) -> None:
    instance_id = await add_instance(database, sim_clock, template_id=None, image_url="a:1")
    # The create was sent (intent committed), Novita made the instance, the answer was lost.
    async with database.transaction() as conn:
        now = sim_clock.now()
        await claims.claim_pending(conn, owner="p0", now=now, ttl=0.0, limit=1)
        assert await claims.record_intent(conn, instance_id, owner="p0", now=now, ttl=0.0)
    made = await client.create_instance(create_request(provider_name(instance_id, "trainer")))
    for n in range(150):  # listed newest first: all of them come before ours
        await client.create_instance(create_request(f"foreign-{n:03d}"))
    sim_clock.advance(1)
    creates = simulator.requests_by_path["/gpu/instance/create"]

    await make_provisioner(database, client, sim_clock).run_once()

    instance = await load(database, instance_id)
    assert (instance.status, instance.novita_instance_id) == (Status.PROVISIONING, made)
    assert simulator.requests_by_path["/gpu/instance/create"] == creates, "no second create"
    marker = id_marker(instance_id)
    ours = [i for i in simulator.instances() if i.name.endswith(marker)]
    assert len(ours) == 1
