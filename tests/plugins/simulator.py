"""Simulator fixtures: a real Novita simulator on loopback, driven by a manual clock.

- `sim_clock`: the `ManualClock` the simulator runs on (advance it, then `await sim.tick()`).
- `simulator`: a started `Simulator` (api key `sim_api_key`, fixed seed), stopped afterwards.
- `simulator_factory`: `await simulator_factory(**config_fields)` for other configurations
  (404 not-found, push URL, dwell...); every simulator it starts is stopped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from service.clock import ManualClock
from service.simulator import Simulator, SimulatorConfig

SIM_API_KEY = "sim-key"
SIM_SEED = 1234

SimulatorFactory = Callable[..., Awaitable[Simulator]]


@pytest.fixture
def sim_api_key() -> str:
    return SIM_API_KEY


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def simulator_factory(
    sim_clock: ManualClock, sim_api_key: str
) -> AsyncIterator[SimulatorFactory]:
    started: list[Simulator] = []

    async def make(**fields: Any) -> Simulator:
        fields.setdefault("api_keys", (sim_api_key,))
        fields.setdefault("seed", SIM_SEED)
        sim = Simulator(SimulatorConfig(**fields), clock=sim_clock)
        await sim.start(host="127.0.0.1", port=0)
        started.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in reversed(started):
            await sim.stop()


@pytest.fixture
async def simulator(simulator_factory: SimulatorFactory) -> Simulator:
    return await simulator_factory()
