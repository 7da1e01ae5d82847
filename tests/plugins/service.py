"""The whole service under test: real app, real uvicorn on loopback, real database, the
simulator as Novita, and an injected ManualClock shared by all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from service.app import create_app
from service.clock import ManualClock
from service.db.engine import Database
from service.resources import Resources, open_resources
from service.settings import Settings, load_settings
from service.simulator import Simulator
from tests.support.server import running_server

API_KEY = "test-api-key-0123456789"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
INBOUND_SECRET = "whsec_aW5ib3VuZC1zZWNyZXQtZm9yLXRlc3RzLTAxMjM0NQ=="


@dataclass
class ServiceUnderTest:
    base_url: str
    http: aiohttp.ClientSession
    resources: Resources
    simulator: Simulator
    clock: ManualClock

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        all_headers = {**(self.auth if auth else {}), **(headers or {})}
        async with self.http.request(
            method, f"{self.base_url}{path}", json=json, data=data, headers=all_headers
        ) as response:
            text = await response.text()
            body = await response.json(content_type=None) if text else None
            return response.status, body, response.headers


def service_settings(database: Database, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database.engine.url.render_as_string(hide_password=False),
        "novita_simulator": True,
        "api_keys": API_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "inbound_webhook_secrets": INBOUND_SECRET,
        "max_retry_attempts": 1,  # a failed Novita call is the test's to see, not retried
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def running_service(
    database: Database,
    simulator: Simulator,
    clock: ManualClock,
    **overrides: Any,
) -> AsyncIterator[ServiceUnderTest]:
    """The app on `database`, its resources opened as `serve` opens them, served on
    loopback, workers off (see the `service` fixture)."""
    settings = service_settings(database, **overrides)
    async with (
        open_resources(settings, clock=clock, database=database, simulator=simulator) as opened,
        serving(opened) as live,
    ):
        yield live


@asynccontextmanager
async def serving(resources: Resources) -> AsyncIterator[ServiceUnderTest]:
    """The app on `resources` (whose Novita is the simulator), on loopback, workers off."""
    assert resources.simulator is not None and isinstance(resources.clock, ManualClock)
    app = create_app(resources.settings, resources, run_workers=False)
    async with running_server(app) as base_url, aiohttp.ClientSession() as http:
        yield ServiceUnderTest(base_url, http, resources, resources.simulator, resources.clock)


@pytest.fixture
async def service(
    request: pytest.FixtureRequest,
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
) -> AsyncIterator[ServiceUnderTest]:
    """The app with workers off (tests drive workers themselves), talking to the simulator.

    `@pytest.mark.service_settings(NAME=value, ...)` overrides settings for one test.
    """
    marker = request.node.get_closest_marker("service_settings")
    overrides = marker.kwargs if marker else {}
    async with running_service(database, simulator, sim_clock, **overrides) as live:
        yield live
