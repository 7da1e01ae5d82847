"""Fixtures for worker tests driven against the simulator on its ManualClock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.clock import ManualClock
from service.db.engine import Database
from service.novita import CircuitBreaker, NovitaClient
from service.simulator import Simulator
from service.workers.provisioner import Provisioner
from tests.support.provisioning import make_client, make_provisioner


@pytest.fixture
async def novita(
    simulator: Simulator, sim_api_key: str, sim_clock: ManualClock
) -> AsyncIterator[NovitaClient]:
    """A client with a tolerant breaker: these tests inject errors without wanting it open
    (a module that tests the breaker itself defines its own `novita`)."""
    breaker = CircuitBreaker(failure_threshold=100, clock=sim_clock)
    async with make_client(simulator, sim_api_key, sim_clock, breaker=breaker) as client:
        yield client


@pytest.fixture
def provisioner(database: Database, novita: NovitaClient, sim_clock: ManualClock) -> Provisioner:
    return make_provisioner(database, novita, sim_clock)
