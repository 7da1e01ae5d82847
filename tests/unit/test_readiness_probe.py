"""Readiness probes: which endpoints are probed, how endpoints are read, what passes, and the
SSRF rules (no connection to a refused address)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from service.readiness import (
    Prober,
    ProbeTarget,
    http_url,
    probe_targets,
    readiness_path,
    tcp_address,
)

MAPPINGS = [
    {"port": 8888, "type": "http", "endpoint": "https://abc-8888.us-ca-1.gpu-instance.novita.ai"},
    {"port": 7860, "type": "http", "endpoint": "https://abc-7860.us-ca-1.gpu-instance.novita.ai"},
    {"port": 22, "type": "tcp", "endpoint": "proxy.us-ca-1.gpu-instance.novita.ai:31022"},
]


def test_by_default_every_http_port_is_probed() -> None:
    targets = probe_targets(MAPPINGS, None)
    assert [t.port for t in targets or []] == [8888, 7860]


def test_without_http_ports_the_tcp_ones_are_probed() -> None:
    targets = probe_targets(MAPPINGS[2:], {"ports": None, "path": "/"})
    assert [(t.port, t.kind) for t in targets or []] == [(22, "tcp")]


def test_named_ports_only_and_a_named_port_without_endpoint_waits() -> None:
    targets = probe_targets(MAPPINGS, {"ports": [22], "path": "/"})
    assert [t.port for t in targets or []] == [22]
    assert probe_targets(MAPPINGS, {"ports": [22, 9000]}) is None
    no_endpoint = [{"port": 22, "type": "tcp", "endpoint": None}]
    assert probe_targets(no_endpoint, {"ports": [22]}) is None


def test_nothing_mapped_means_nothing_to_probe() -> None:
    assert probe_targets([], None) == []


def test_endpoint_forms() -> None:
    assert http_url("http://127.0.0.1:5000/id/8888/", "/health") == (
        "http://127.0.0.1:5000/id/8888/health"
    )
    assert http_url("abc-8888.x.gpu-instance.novita.ai", "/") == (
        "https://abc-8888.x.gpu-instance.novita.ai/"
    )
    assert tcp_address("proxy.x.gpu-instance.novita.ai:31022") == (
        "proxy.x.gpu-instance.novita.ai",
        31022,
    )
    assert tcp_address("tcp://10.1.2.3:22") == ("10.1.2.3", 22)
    assert tcp_address("[::1]:22") == ("::1", 22)
    assert readiness_path({"path": "health"}) == "/health"
    with pytest.raises(ValueError):
        tcp_address("no-port-here")


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found, but answering")

    async def gateway_page(_request: web.Request) -> web.Response:
        return web.Response(
            status=200,
            text="<html><title>502 Bad Gateway</title></html>",
            content_type="text/html",
        )

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/gateway", gateway_page)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def probe(prober: Prober, target: ProbeTarget, path: str = "/") -> tuple[bool, str, bool]:
    [result] = (await prober.probe_many({"i": ([target], path)}))["i"]
    return result.passed, result.detail, result.refused


async def test_http_passes_on_any_answer_but_5xx_and_gateway_pages(app_url: str) -> None:
    prober = Prober(timeout=2, concurrency=4, allow_private=True)
    target = ProbeTarget(80, "http", app_url)
    assert await probe(prober, target, "/ok") == (True, "HTTP 404", False)
    assert (await probe(prober, target, "/broken"))[:2] == (False, "HTTP 503")
    assert not (await probe(prober, target, "/gateway"))[0]


async def test_tcp_passes_once_a_connection_is_accepted() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    prober = Prober(timeout=2, concurrency=4, allow_private=True)
    async with server:
        assert (await probe(prober, ProbeTarget(22, "tcp", f"127.0.0.1:{port}")))[0]
    passed, detail, _ = await probe(prober, ProbeTarget(22, "tcp", f"127.0.0.1:{port}"))
    assert not passed and detail


async def test_private_and_metadata_targets_are_refused_without_a_connection(
    app_url: str,
) -> None:
    strict = Prober(timeout=2, concurrency=4, allow_private=False)
    assert await probe(strict, ProbeTarget(80, "http", app_url), "/ok") == (
        False,
        "refused: 127.0.0.1 is a loopback address",
        True,
    )
    host_port = app_url.removeprefix("http://")
    assert (await probe(strict, ProbeTarget(22, "tcp", host_port)))[2]
    assert (await probe(strict, ProbeTarget(80, "http", "http://localhost:1/")))[2]
    lenient = Prober(timeout=2, concurrency=4, allow_private=True)
    metadata = ProbeTarget(80, "http", "http://169.254.169.254/latest/")
    assert (await probe(lenient, metadata))[2], "metadata stays refused when private is allowed"


async def test_an_unanswered_probe_times_out() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, never answer HTTP
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    prober = Prober(timeout=0.2, concurrency=1, allow_private=True)
    async with server:
        assert await probe(prober, ProbeTarget(80, "http", f"http://127.0.0.1:{port}/")) == (
            False,
            "timeout",
            False,
        )
        server.close()


def test_a_requested_port_without_an_endpoint_yet_waits() -> None:
    requested = [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}]
    # Running reported without port mappings (a webhook, a list that omits them).
    assert probe_targets([], None, requested) is None
    half = [{"port": 8888, "type": "http", "endpoint": MAPPINGS[0]["endpoint"]}]
    assert probe_targets(half, None, requested) is None
    targets = probe_targets(MAPPINGS, None, requested)
    assert [t.port for t in targets or []] == [8888, 7860]
