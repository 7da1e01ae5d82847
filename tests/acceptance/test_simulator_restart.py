"""`serve --simulator` restarted on the same database finds the world it left (issue 16).

Each run is the whole app through its lifespan (built-in simulator, every worker) under a
real uvicorn server, as `serve --simulator` runs it; the second run opens the same database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from service.app import create_app
from service.settings import Settings, load_settings
from tests.support.server import running_server

KEY = "restart-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CREATE = {"name": "demo", "productName": "RTX 4090 24GB", "templateId": "212"}


def _settings(database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        novita_simulator=True,
        api_keys=KEY,
        poll_interval_transitional=0.5,
        readiness_interval=0.5,
    )


async def _create(http: aiohttp.ClientSession, base: str, name: str) -> str:
    async with http.post(f"{base}/api/instances", json={**CREATE, "name": name}) as response:
        body = await response.json()
        assert response.status == 202, body
        return str(body["id"])


async def _instance(http: aiohttp.ClientSession, base: str, instance_id: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/instances/{instance_id}") as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body


async def _wait_ready(http: aiohttp.ClientSession, base: str, instance_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    async with asyncio.timeout(40):
        while True:
            body = await _instance(http, base, instance_id)
            assert body["status"] not in ("failed", "deleted"), body
            if body["status"] == "ready":
                return body
            await asyncio.sleep(0.3)


async def _endpoints_answer(instance: dict[str, Any]) -> None:
    """The HTTP endpoint answers 200 through the gateway; the TCP one greets like SSH."""
    mappings = {m["port"]: m["endpoint"] for m in instance["portMappings"]}
    async with aiohttp.ClientSession() as http, http.get(mappings[8888]) as response:
        assert response.status == 200
    host, port = mappings[22].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"SSH-2.0-")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_restart_on_the_same_database_keeps_the_world(database_url: str) -> None:
    settings = _settings(database_url)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with running_server(create_app(settings, migrate=True)) as base:
            first_id = await _create(http, base, "first")
            first = await _wait_ready(http, base, first_id)
            await _endpoints_answer(first)

        async with running_server(create_app(settings)) as base:
            # The first instance is still there, still ready, its endpoints answering.
            await asyncio.sleep(1.5)  # a few reconciler and readiness passes
            again = await _instance(http, base, first_id)
            assert again["status"] == "ready", again
            assert again["novitaInstanceId"] == first["novitaInstanceId"]
            await _endpoints_answer(again)
            # A new instance gets a new Novita id and becomes ready too.
            second_id = await _create(http, base, "second")
            second = await _wait_ready(http, base, second_id)
            assert second["novitaInstanceId"] != first["novitaInstanceId"]
            await _endpoints_answer(second)
            assert (await _instance(http, base, first_id))["status"] == "ready"
