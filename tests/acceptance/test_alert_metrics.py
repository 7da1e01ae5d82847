"""The metrics the alert rules in deploy/ rest on: how long instances wait in a
transitional status, and whether the database answered the scrape."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from service.app import create_app
from service.settings import load_settings
from tests.plugins.database import _asyncpg_dsn, postgres_admin_url
from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import BODY
from tests.support.metrics import scrape
from tests.support.server import running_server


async def test_oldest_wait_in_each_transitional_status(service: ServiceUnderTest) -> None:
    samples = await scrape(service)
    waiting = "instances_oldest_in_status_seconds"
    assert samples[(waiting, (("status", "pending"),))] == 0
    await service.call("POST", "/api/instances", json=BODY)
    service.clock.advance(600)
    await service.call("POST", "/api/instances", json=BODY)
    await service.resources.figures.refresh()  # what the background reader does
    service.clock.advance(60)  # the wait keeps growing between readings
    samples = await scrape(service)
    assert samples[(waiting, (("status", "pending"),))] == 660, "the longest-waiting one"
    assert samples[(waiting, (("status", "provisioning"),))] == 0
    assert samples[("database_up", ())] == 1


async def test_database_down_is_a_metric_not_a_failed_scrape(postgres_url: str) -> None:
    settings = load_settings(
        database_url=postgres_url, novita_simulator=True, api_keys="k" * 20
    )
    app = create_app(settings, migrate=True, run_workers=False)
    async with running_server(app) as base_url, aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/metrics") as response:
            assert "database_up 1.0" in await response.text()
        admin = await asyncpg.connect(_asyncpg_dsn(postgres_admin_url()))
        try:
            name = make_url(postgres_url).database
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        # The next background reading (every 5 s) finds the database gone.
        async with asyncio.timeout(30):
            while True:
                async with http.get(f"{base_url}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                if "database_up 0.0" in text:
                    break
                await asyncio.sleep(0.5)
    assert "novita_breaker_state" in text
