"""`novita-lifecycle check-novita` against the simulator in every reading: the checks tell
each reading apart, none of them blocks, and what cannot work (a refused key, a wrong base
URL) exits 1. The command runs in-process (click's CliRunner) against a real simulator on
loopback, served from its own thread and event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from service.__main__ import cli
from service.novita.contract_check import DIFFERS, OK, UNKNOWN, Finding, run_checks
from service.simulator import Simulator, SimulatorConfig
from service.simulator.readings import Readings, every_reading
from service.simulator.validation import parse_create
from tests.plugins.simulator import SimulatorFactory

KEY = "sk-check-0123456789abcdef"
READINGS = every_reading()
GPU_BODY = {
    "productId": "4090.16c62g",
    "gpuNum": 1,
    "rootfsSize": 20,
    "imageUrl": "pytorch/pytorch:2.4.0",
    "kind": "gpu",
}


def by_assumption(findings: list[Finding], start: str) -> Finding:
    return next(f for f in findings if f.assumption.startswith(start))


async def seed_instances(sim: Simulator, count: int = 2) -> None:
    """Instances on the account, so the page base and the name filter can be told."""
    for n in range(count):
        mono, unix = sim.now()
        request = parse_create({**GPU_BODY, "name": f"checked-{n}"})
        _, changes = sim.state.create(request, mono, unix)
        sim.apply(changes)


@pytest.mark.parametrize("reading", [r for _, r in READINGS], ids=[n for n, _ in READINGS])
async def test_every_reading_is_told_apart_and_none_blocks(
    simulator_factory: SimulatorFactory, reading: Readings
) -> None:
    sim = await simulator_factory(readings=reading.copy(), api_keys=(KEY,))
    await seed_instances(sim)

    findings = await run_checks(sim.base_url, KEY)

    assert not [f for f in findings if f.blocking], findings
    pages = by_assumption(findings, "List pages count from 0")
    assert pages.verdict == (OK if reading.page_base == "0" else DIFFERS)
    assert ("counts pages from 0" in pages.handling) == (reading.page_base == "0")
    missing = by_assumption(findings, "A missing instance")
    expected_form = {"400": "400 JSON", "404-json": "404 JSON", "404-text": "404 plain text"}
    assert missing.seen.startswith(expected_form[reading.not_found])
    assert missing.verdict == (OK if reading.not_found == "400" else DIFFERS)
    regions = by_assumption(findings, "Product regions")
    form = {"names": "display names", "codes": "codes", "ids": "cluster ids",
            "objects": "objects"}[reading.regions]
    assert regions.seen.startswith(form)
    assert regions.verdict == (OK if reading.regions == "names" else DIFFERS)
    reason = by_assumption(findings, "Error bodies carry")
    assert reason.verdict == (OK if reading.error_reason == "field" else DIFFERS)
    name_filter = by_assumption(findings, "The list's `name` filter")
    assert name_filter.verdict == (OK if reading.name_filter == "substring" else DIFFERS)
    assert by_assumption(findings, "Every product parses").verdict == OK


async def test_a_malformed_product_differs_but_does_not_block(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(api_keys=(KEY,))
    sim.faults.malformed_products = 1
    findings = await run_checks(sim.base_url, KEY)
    products = by_assumption(findings, "Every product parses")
    assert (products.verdict, products.blocking) == (DIFFERS, False)
    assert "skips 1" in products.handling


async def test_an_account_without_instances_leaves_the_page_base_to_run_time(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(api_keys=(KEY,))
    findings = await run_checks(sim.base_url, KEY)
    assert by_assumption(findings, "List pages count from 0").verdict == UNKNOWN
    assert not [f for f in findings if f.blocking]


# -- the command ------------------------------------------------------------------------


class ThreadedSimulator:
    """A simulator on its own event loop in a thread, for a synchronous CliRunner test."""

    def __init__(self, readings: Readings, instances: int = 2) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.sim = Simulator(SimulatorConfig(api_keys=(KEY,), readings=readings, seed=7))
        self._instances = instances

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def __enter__(self) -> Simulator:
        self._thread.start()
        self._run(self.sim.start(port=0))
        self._run(seed_instances(self.sim, self._instances))
        return self.sim

    def __exit__(self, *exc: object) -> None:
        self._run(self.sim.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()


def check(runner: CliRunner, base_url: str, key: str = KEY) -> Any:
    env = {"NOVITA_API_KEY": key, "NOVITA_API_BASE_URL": base_url}
    return runner.invoke(cli, ["check-novita", "--timeout", "10"], env=env)


@pytest.mark.parametrize(
    "reading",
    [Readings(), Readings(page_base="1-strict", not_found="404-text", error_reason="message",
                          regions="objects", action_body="none", name_filter="exact")],
    ids=["documented", "every-other-reading"],
)
def test_the_command_prints_the_table_and_exits_0(runner: CliRunner, reading: Readings) -> None:
    with ThreadedSimulator(reading) as sim:
        result = check(runner, sim.base_url)
    assert result.exit_code == 0, result.output
    assert "List pages count from 0" in result.output
    assert "What the service will do" in result.output
    assert KEY not in result.output
    if reading == Readings():
        assert "Everything checked answers as documented." in result.output
    else:
        assert "all handled by the client" in result.output


def test_a_refused_key_exits_1_without_printing_it(runner: CliRunner) -> None:
    with ThreadedSimulator(Readings()) as sim:
        result = check(runner, sim.base_url, key="sk-wrong-key-987654321")
    assert result.exit_code == 1
    assert "The API key is accepted" in result.output and "DIFFERS" in result.output
    assert "sk-wrong-key-987654321" not in result.output
    assert "cannot handle" in result.output


def test_a_base_url_that_is_not_the_api_exits_1(runner: CliRunner) -> None:
    with ThreadedSimulator(Readings()) as sim:
        result = check(runner, sim.url + "/not-the-api")
    assert result.exit_code == 1
    assert "check NOVITA_API_BASE_URL" in result.output


def test_nothing_listening_exits_1(runner: CliRunner) -> None:
    result = check(runner, "http://127.0.0.1:9/gpu-instance/openapi/v1")
    assert result.exit_code == 1
    assert "Novita answers at the base URL" in result.output


def test_without_a_key_it_says_so(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check-novita"], env={"NOVITA_API_KEY": ""})
    assert result.exit_code == 2
    assert "NOVITA_API_KEY" in result.output
