"""NovitaClient against the simulator over real loopback sockets.

Time is virtual: the simulator and the client share a ManualClock, and the client's sleep
records each delay and advances that clock instead of waiting.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.errors import ConfigError
from service.novita import (
    BreakerState,
    CircuitBreaker,
    CreateInstanceRequest,
    NovitaAuthenticationError,
    NovitaCapacityError,
    NovitaCircuitOpenError,
    NovitaClient,
    NovitaError,
    NovitaInvalidStateError,
    NovitaNetworkError,
    NovitaNotFoundError,
    NovitaServerError,
    NovitaTimeoutError,
    PortSpec,
)
from service.settings import Settings
from service.simulator import Simulator
from tests.support.provisioning import CREATE_PATH, ClockSleep


@pytest.fixture
def sleeps(sim_clock: ManualClock) -> ClockSleep:
    return ClockSleep(sim_clock)


@pytest.fixture
def make_client(
    simulator: Simulator, sim_api_key: str, sim_clock: ManualClock, sleeps: ClockSleep
) -> Callable[..., NovitaClient]:
    def make(**overrides: object) -> NovitaClient:
        options: dict[str, object] = {"clock": sim_clock, "sleep": sleeps, "timeout": 5.0}
        options |= overrides
        base_url = str(options.pop("base_url", simulator.base_url))
        api_key = str(options.pop("api_key", sim_api_key))
        return NovitaClient(base_url, api_key, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def client(make_client: Callable[..., NovitaClient]) -> AsyncIterator[NovitaClient]:
    async with make_client() as novita:
        yield novita


def request(name: str = "inst_test", **overrides: object) -> CreateInstanceRequest:
    fields: dict[str, object] = {
        "name": name,
        "product_id": "4090.16c62g",
        "gpu_num": 1,
        "rootfs_size": 60,
        "image_url": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
        "ports": [PortSpec(port=8888, type="http"), PortSpec(port=22, type="tcp")],
        "cluster_id": "as-sgp-2",
    }
    return CreateInstanceRequest.model_validate(fields | overrides)


async def settle(simulator: Simulator, clock: ManualClock, seconds: float = 60.0) -> None:
    """Let simulated time pass in steps, so every dwell ends."""
    for _ in range(int(seconds // 5)):
        clock.advance(5)
        await simulator.tick()


async def running_instance(client: NovitaClient, simulator: Simulator, clock: ManualClock) -> str:
    instance_id = await client.create_instance(request())
    await settle(simulator, clock)
    assert (await client.get_instance(instance_id)).status == "running"
    return instance_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- reads -------------------------------------------------------------------------------


async def test_list_clusters(client: NovitaClient) -> None:
    clusters = await client.list_clusters()
    by_id = {c.id: c for c in clusters}
    assert "as-sgp-2" in by_id
    assert by_id["as-sgp-2"].name == "AS-SGP-02"
    assert by_id["as-sgp-2"].available_gpu_types


async def test_list_products_parses_prices_and_regions(client: NovitaClient) -> None:
    products = await client.list_products()
    product = next(p for p in products if p.id == "4090.16c62g")
    assert product.price == Decimal("0.35")
    assert product.spot_price == Decimal("0.175")
    assert product.price_for("monthly") is not None
    assert "AS-SGP-02" in product.region_codes
    assert product.cpu_per_gpu == 16


async def test_list_products_filters_reach_the_server(client: NovitaClient) -> None:
    products = await client.list_products(cluster_id="as-sgp-2", gpu_num=1, product_name="4090")
    assert products
    assert all("4090" in p.name for p in products)
    assert all(not p.region_codes or "AS-SGP-02" in p.region_codes for p in products)
    spot = await client.list_products(billing_method="spot")
    assert all(p.price_for("spot") is not None for p in spot)


async def test_get_template(client: NovitaClient) -> None:
    template = await client.get_template("212")
    assert template.id == "212"
    assert PortSpec(port=8888, type="http") in template.ports
    assert PortSpec(port=22, type="tcp") in template.ports
    assert template.rootfs_size == 60
    assert any(env.key == "JUPYTER_TOKEN" for env in template.envs)


async def test_get_missing_template_is_not_found(client: NovitaClient) -> None:
    with pytest.raises(NovitaNotFoundError):
        await client.get_template("999999")


async def test_registry_auths_come_without_passwords(client: NovitaClient) -> None:
    auths = await client.list_registry_auths()
    assert {a.name for a in auths} >= {"ghcr-acme"}
    assert all("simulated" not in repr(a) for a in auths)


# -- instance lifecycle ------------------------------------------------------------------


async def test_create_get_and_lifecycle(
    client: NovitaClient, simulator: Simulator, sim_clock: ManualClock
) -> None:
    instance_id = await client.create_instance(request(name="inst_lifecycle"))
    created = await client.get_instance(instance_id)
    assert created.id == instance_id
    assert created.name == "inst_lifecycle"
    assert created.status in {"pending", "toCreate", "creating", "pulling"}
    assert created.port_mappings == ()

    await settle(simulator, sim_clock)
    running = await client.get_instance(instance_id)
    assert running.status == "running"
    assert running.gpu_num == 1
    assert running.product_id == "4090.16c62g"
    assert running.cluster_id == "as-sgp-2"
    assert {(m.port, m.type) for m in running.port_mappings} == {(8888, "http"), (22, "tcp")}
    assert all(m.endpoint for m in running.port_mappings)
    assert running.created_at is not None and running.created_at.tzinfo is not None

    await client.restart_instance(instance_id)
    await settle(simulator, sim_clock)
    assert (await client.get_instance(instance_id)).status == "running"

    await client.stop_instance(instance_id)
    await settle(simulator, sim_clock)
    assert (await client.get_instance(instance_id)).status == "exited"

    await client.start_instance(instance_id)
    await settle(simulator, sim_clock)
    assert (await client.get_instance(instance_id)).status == "running"

    await client.delete_instance(instance_id)
    assert (await client.get_instance(instance_id)).status in {"toRemove", "removing", "removed"}


async def test_migrate_an_exited_instance(
    client: NovitaClient, simulator: Simulator, sim_clock: ManualClock
) -> None:
    instance_id = await running_instance(client, simulator, sim_clock)
    await client.stop_instance(instance_id)
    await settle(simulator, sim_clock)
    await client.migrate_instance(instance_id)
    assert (await client.get_instance(instance_id)).status == "migrating"


async def test_pagination_walks_every_page(client: NovitaClient, simulator: Simulator) -> None:
    names = {f"inst_page_{n:02d}" for n in range(25)}
    for name in sorted(names):
        await client.create_instance(request(name=name))

    first = await client.list_instances(page_size=10)
    assert len(first.instances) == 10
    assert first.total == 25
    assert client.page_base == 0  # the simulator's default reading
    last = await client.list_instances(page_size=10, page_num=2)
    assert len(last.instances) == 5

    before = simulator.requests_by_path.get("/gpu/instances", 0)
    seen = [i.name async for i in client.iter_instances(page_size=10)]
    assert sorted(seen) == sorted(names)
    assert simulator.requests_by_path.get("/gpu/instances", 0) - before == 3


async def test_list_filters_by_name(client: NovitaClient) -> None:
    await client.create_instance(request(name="inst_alpha"))
    await client.create_instance(request(name="inst_beta"))
    page = await client.list_instances(name="inst_alpha")
    assert [i.name for i in page.instances] == ["inst_alpha"]


# -- errors from real simulator answers --------------------------------------------------


async def test_wrong_key_is_an_authentication_error(
    make_client: Callable[..., NovitaClient],
) -> None:
    async with make_client(api_key="not-the-key") as novita:
        with pytest.raises(NovitaAuthenticationError) as caught:
            await novita.list_clusters()
    assert caught.value.status == 401
    assert caught.value.code == "NOVITA_AUTHENTICATION"


async def test_unknown_instance_is_not_found_with_400(client: NovitaClient) -> None:
    with pytest.raises(NovitaNotFoundError) as caught:
        await client.get_instance("0000000000000000")
    assert caught.value.status == 400
    assert caught.value.reason == "RESOURCE_NOT_FOUND"


async def test_unknown_instance_is_not_found_with_404(
    simulator_factory: Callable[..., Awaitable[Simulator]],
    make_client: Callable[..., NovitaClient],
) -> None:
    sim = await simulator_factory(not_found_status=404)
    async with make_client(base_url=sim.base_url) as novita:
        with pytest.raises(NovitaNotFoundError) as caught:
            await novita.get_instance("0000000000000000")
        with pytest.raises(NovitaNotFoundError):
            await novita.stop_instance("0000000000000000")
    assert caught.value.status == 404


async def test_no_capacity_is_a_capacity_error(client: NovitaClient, simulator: Simulator) -> None:
    simulator.set_capacity("as-sgp-2", 0, product_id="4090.16c62g")
    with pytest.raises(NovitaCapacityError) as caught:
        await client.create_instance(request())
    assert caught.value.reason == "INSUFFICIENT_RESOURCE"
    assert simulator.requests_by_path[CREATE_PATH] == 1


async def test_starting_a_running_instance_is_an_invalid_state_change(
    client: NovitaClient, simulator: Simulator, sim_clock: ManualClock
) -> None:
    instance_id = await running_instance(client, simulator, sim_clock)
    with pytest.raises(NovitaInvalidStateError) as caught:
        await client.start_instance(instance_id)
    assert caught.value.code == "NOVITA_INVALID_STATE"
    assert caught.value.status == 400


async def test_a_bad_request_is_not_retried(client: NovitaClient, simulator: Simulator) -> None:
    with pytest.raises(NovitaError) as caught:
        await client.create_instance(request(rootfs_size=100_000))
    assert caught.value.code == "NOVITA_BAD_REQUEST"
    assert simulator.requests_by_path[CREATE_PATH] == 1


async def test_429_is_retried_after_the_retry_after_delay(
    client: NovitaClient, simulator: Simulator, sleeps: ClockSleep
) -> None:
    simulator.faults.rate_limit_per_minute = 2
    await client.list_clusters()
    await client.list_clusters()
    clusters = await client.list_clusters()  # 429 first, then allowed once the window moved
    assert clusters
    assert len(sleeps.delays) == 1
    assert sleeps.delays[0] >= 59.0  # Retry-After: until the oldest request leaves the window
    assert simulator.requests_by_path["/clusters"] == 4
    status = client.status()
    assert status.retries == 1
    assert status.errors_by_code["NOVITA_RATE_LIMITED"] == 1
    assert client.limiter.times_paused == 1


async def test_injected_429s_honour_retry_after_then_give_up(
    client: NovitaClient, simulator: Simulator, sleeps: ClockSleep
) -> None:
    simulator.faults.rate_limit_rate = 1.0
    simulator.faults.retry_after = 4
    with pytest.raises(NovitaError) as caught:
        await client.list_products()
    assert caught.value.code == "NOVITA_RATE_LIMITED"
    assert caught.value.retry_after == 4.0
    assert [d for d in sleeps.delays if d >= 4.0] == [4.0, 4.0]
    assert simulator.requests_by_path["/products"] == 3
    assert client.status().breaker_state == "closed"  # 429 is not an availability failure


async def test_5xx_is_retried_then_raised_as_a_server_error(
    client: NovitaClient, simulator: Simulator, sleeps: ClockSleep
) -> None:
    simulator.faults.error_rate = 1.0
    with pytest.raises(NovitaServerError) as caught:
        await client.get_instance("0000000000000000")
    assert caught.value.status == 500
    assert simulator.requests_by_path["/gpu/instance"] == 3
    assert len(sleeps.delays) == 2
    assert sleeps.delays[0] < sleeps.delays[1]  # exponential
    assert client.status().retries == 2


async def test_a_hang_is_a_timeout(
    make_client: Callable[..., NovitaClient], simulator: Simulator
) -> None:
    simulator.faults.hang_rate = 1.0
    simulator.faults.hang_seconds = 30.0
    async with make_client(timeout=0.2, max_attempts=1) as novita:
        with pytest.raises(NovitaTimeoutError) as caught:
            await novita.list_clusters()
    assert caught.value.code == "NOVITA_TIMEOUT"


async def test_connection_refused_is_a_network_error(
    make_client: Callable[..., NovitaClient], sleeps: ClockSleep
) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/gpu-instance/openapi/v1"
    async with make_client(base_url=base_url) as novita:
        with pytest.raises(NovitaNetworkError) as caught:
            await novita.list_clusters()
        assert novita.status().requests == 3
    assert caught.value.code == "NOVITA_NETWORK"
    assert len(sleeps.delays) == 2


async def test_create_is_never_retried_even_on_500(
    client: NovitaClient, simulator: Simulator, sleeps: ClockSleep
) -> None:
    simulator.faults.create_500_after_create = 1
    with pytest.raises(NovitaServerError):
        await client.create_instance(request(name="inst_ambiguous"))
    assert simulator.requests_by_path[CREATE_PATH] == 1
    assert sleeps.delays == []
    page = await client.list_instances(name="inst_ambiguous")
    assert [i.name for i in page.instances] == ["inst_ambiguous"]  # it was created


async def test_breaker_opens_after_repeated_5xx_and_then_fails_fast(
    make_client: Callable[..., NovitaClient], simulator: Simulator, sim_clock: ManualClock
) -> None:
    simulator.faults.error_rate = 1.0
    async with make_client(max_attempts=1) as novita:
        for _ in range(5):
            with pytest.raises(NovitaServerError):
                await novita.list_clusters()
        assert novita.breaker.state is BreakerState.OPEN
        sent = simulator.request_count

        with pytest.raises(NovitaCircuitOpenError) as caught:
            await novita.list_clusters()
        assert caught.value.retry_after == pytest.approx(60.0)
        assert simulator.request_count == sent  # nothing reached Novita

        simulator.faults.error_rate = 0.0
        sim_clock.advance(60)
        assert novita.status().breaker_state == "half_open"
        for _ in range(3):
            await novita.list_clusters()
        assert novita.breaker.state is BreakerState.CLOSED


async def test_retries_stop_when_the_breaker_opens(
    make_client: Callable[..., NovitaClient], simulator: Simulator
) -> None:
    simulator.faults.error_rate = 1.0
    breaker = CircuitBreaker(failure_threshold=2, clock=ManualClock())
    async with make_client(max_attempts=5, breaker=breaker) as novita:
        with pytest.raises(NovitaCircuitOpenError):
            await novita.list_clusters()
    assert simulator.requests_by_path["/clusters"] == 2


async def test_the_api_key_never_reaches_errors_or_logs(
    make_client: Callable[..., NovitaClient], simulator: Simulator
) -> None:
    wrong_key = "sk_wrong_0123456789abcdef"
    with capture_logs() as logs:
        async with make_client(api_key=wrong_key) as novita:
            with pytest.raises(NovitaAuthenticationError) as auth:
                await novita.list_clusters()
        simulator.faults.error_rate = 1.0
        async with make_client() as novita:
            with pytest.raises(NovitaServerError) as server:
                await novita.list_clusters()
    for error in (auth.value, server.value):
        text = f"{error} {error!r} {error.details} {error.metadata}"
        assert wrong_key not in text
        assert "sim-key" not in text
    assert "sim-key" not in str(logs)
    assert wrong_key not in str(logs)


async def test_a_session_passed_in_is_not_closed(simulator: Simulator, sim_api_key: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with NovitaClient(simulator.base_url, sim_api_key, session=session) as novita:
            await novita.list_clusters()
        assert not session.closed
        assert novita.status().requests == 1


async def test_status_counts_requests_per_endpoint(client: NovitaClient) -> None:
    await client.list_clusters()
    await client.list_clusters()
    with pytest.raises(NovitaNotFoundError):
        await client.get_instance("0000000000000000")
    status = client.status()
    assert status.requests == 3
    assert status.requests_by_endpoint["GET /clusters"] == 2
    assert status.errors_by_code == {"NOVITA_NOT_FOUND": 1}
    assert status.breaker_state == "closed"
    assert status.limiter_backlog == 0


async def test_from_settings_uses_the_configured_values(
    simulator: Simulator, sim_api_key: str
) -> None:
    settings = Settings(
        novita_api_key=SecretStr(sim_api_key),
        novita_api_base_url=simulator.base_url,
        max_retry_attempts=2,
        rate_limit_per_minute=7,
    )
    async with NovitaClient.from_settings(settings) as novita:
        assert novita.retry.max_attempts == 2
        assert novita.limiter.per_minute == 7
        assert await novita.list_clusters()
    with pytest.raises(ConfigError):
        NovitaClient.from_settings(Settings(novita_api_key=None))


async def test_a_product_that_does_not_parse_is_skipped_and_logged_once(
    client: NovitaClient, simulator: Simulator
) -> None:
    simulator.faults.malformed_products = 2
    with capture_logs() as logs:
        first = await client.list_products()
        again = await client.list_products()
    assert {p.id for p in first} == {p.id for p in again}
    assert "4090.16c62g" in {p.id for p in first}
    assert not any(p.id.startswith("broken.") for p in first)
    skipped = [e for e in logs if e["event"] == "novita.item_skipped"]
    assert sorted(e["item"] for e in skipped) == ["broken.0", "broken.1"]
