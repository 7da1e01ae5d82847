"""`GET /api/events` over real loopback HTTP, on SQLite and PostgreSQL: events as they are
written, resumed after a disconnect without a loss or a repeat, filters, refusals that
name the field, heartbeats, and a client too slow to read being cut."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from novita_lifecycle_client import LifecycleClient, ValidationError
from novita_lifecycle_client.backoff import Backoff
from novita_lifecycle_client.sse import Message, messages
from service.app import create_app
from service.db import repository as repo
from service.domain import InstanceSpec
from tests.plugins.service import API_KEY, ServiceUnderTest
from tests.support.server import running_server

FAST = pytest.mark.service_settings(event_stream_poll_interval=0.05)


@asynccontextmanager
async def open_stream(
    service: ServiceUnderTest, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    async with service.http.get(
        f"{service.base_url}/api/events{query}",
        headers={**service.auth, **(headers or {})},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        yield response


async def take(response: aiohttp.ClientResponse, count: int) -> list[Message]:
    """The next `count` instance events (the `connected` preamble and heartbeats skipped)."""
    found: list[Message] = []
    async with asyncio.timeout(20):
        async for message in messages(response.content):
            if message.event == "instance-event":
                found.append(message)
                if len(found) == count:
                    return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} events")


async def nothing_more(response: aiohttp.ClientResponse, seconds: float = 0.4) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await take(response, 1)


async def create(service: ServiceUnderTest, name: str, **labels: str) -> str:
    body = {"name": name, "productName": "RTX 4090 24GB", "templateId": "212", "labels": labels}
    status, created, _ = await service.call("POST", "/api/instances", json=body)
    assert status == 202, created
    return str(created["id"])


async def create_many_at_once(service: ServiceUnderTest, count: int) -> list[str]:
    """`count` instances (one event each) committed in one transaction: one poll sees all."""
    ids = []
    async with service.resources.database.transaction() as conn:
        for number in range(count):
            spec = InstanceSpec(name=f"bulk-{number}", product_name="RTX 4090 24GB")
            result = await repo.insert_instance(conn, spec, now=service.clock.now())
            ids.append(result.instance.id)
    return ids


def data(message: Message) -> dict[str, Any]:
    return json.loads(message.data)  # type: ignore[no-any-return]


@FAST
async def test_new_events_arrive_with_their_ids_and_data(service: ServiceUnderTest) -> None:
    async with open_stream(service) as stream:
        first = await create(service, "one", team="a")
        second = await create(service, "two")
        events = await take(stream, 2)
    assert [data(m)["instanceId"] for m in events] == [first, second]
    assert [m.id for m in events] == [data(m)["id"] for m in events]
    assert int(events[0].id or 0) < int(events[1].id or 0)
    payload = data(events[0])
    assert payload["toStatus"] == "pending" and payload["kind"] == "created"
    assert payload["sequence"] == 1 and payload["source"] == "api"


@FAST
async def test_a_stream_sees_events_written_by_another_process(service: ServiceUnderTest) -> None:
    """A second app with its own engine on the same database (as another process would
    be): events created through one are streamed by the other."""
    other = create_app(service.resources.settings, run_workers=False)
    async with running_server(other) as other_url:
        async with service.http.get(
            f"{other_url}/api/events", headers=service.auth, timeout=aiohttp.ClientTimeout(30)
        ) as stream:
            assert stream.status == 200
            created = [await create(service, f"elsewhere-{n}") for n in range(3)]
            events = await take(stream, 3)
    assert [data(m)["instanceId"] for m in events] == created


@FAST
async def test_resuming_with_last_event_id_loses_and_repeats_nothing(
    service: ServiceUnderTest,
) -> None:
    before = await create(service, "before")
    async with open_stream(service) as stream:
        during = await create(service, "during")
        (seen,) = await take(stream, 1)
    assert data(seen)["instanceId"] == during
    # Disconnected: these happen while nobody listens.
    missed = [await create(service, f"missed-{n}") for n in range(3)]
    async with open_stream(service, headers={"Last-Event-ID": seen.id or ""}) as stream:
        after = await create(service, "after")
        events = await take(stream, 4)
        await nothing_more(stream)
    assert [data(m)["instanceId"] for m in events] == [*missed, after]
    assert before not in [data(m)["instanceId"] for m in events]
    # The query parameter does the same for clients that cannot set headers.
    async with open_stream(service, f"?lastEventId={events[1].id}") as stream:
        rest = await take(stream, 2)
    assert [m.id for m in rest] == [m.id for m in events[2:]]


@FAST
async def test_resume_from_far_back_pages_through_the_history(service: ServiceUnderTest) -> None:
    ids = await create_many_at_once(service, 1050)  # three pages of 500
    async with open_stream(service, headers={"Last-Event-ID": "0"}) as stream:
        events = await take(stream, 1050)
        await nothing_more(stream)
    assert [data(m)["instanceId"] for m in events] == ids


@FAST
async def test_filters_by_instance_label_and_status(service: ServiceUnderTest) -> None:
    a = await create(service, "a", team="red")
    b = await create(service, "b", team="blue")
    cases = {
        f"?instance={b}": [b],
        "?label=team:red": [a],
        "?label=team=blue": [b],
        "?status=pending": [a, b],
        "?status=stopped,running": [],
        f"?instance={a}&label=team:blue": [],
    }
    for query, expected in cases.items():
        async with open_stream(service, query, {"Last-Event-ID": "0"}) as stream:
            if expected:
                got = await take(stream, len(expected))
                assert [data(m)["instanceId"] for m in got] == expected, query
            await nothing_more(stream, 0.2)


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("?status=sleeping", {}, "status"),
        ("?label=nocolon", {}, "label"),
        ("?instance=no-such-instance", {}, "instance"),
        (f"?instance={'x' * 65}", {}, "instance"),
        ("", {"Last-Event-ID": "12abc"}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "1" * 20}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "9999999999999999999"}, "Last-Event-ID"),  # > 2**63 - 1
        ("", {"Last-Event-ID": "-1"}, "Last-Event-ID"),
        ("?lastEventId=%D9%A1%D9%A2", {}, "lastEventId"),  # Arabic-Indic digits
        ("?lastEventId=1e5", {}, "lastEventId"),
    ],
)
async def test_bad_filters_and_ids_are_refused_naming_the_field(
    service: ServiceUnderTest, query: str, headers: dict[str, str], field: str
) -> None:
    status, body, _ = await service.call("GET", f"/api/events{query}", headers=headers)
    assert status == 422, body
    assert [f["field"] for f in body["error"]["details"]["fields"]] == [field]


async def test_the_stream_needs_an_api_key(service: ServiceUnderTest) -> None:
    status, body, _ = await service.call("GET", "/api/events", auth=False)
    assert status == 401
    assert body["error"]["code"] == "UNAUTHORIZED" or "API key" in body["error"]["message"]


@pytest.mark.service_settings(event_stream_poll_interval=0.05, event_stream_heartbeat=0.2)
async def test_heartbeats_are_comment_lines(service: ServiceUnderTest) -> None:
    async with open_stream(service) as stream:
        lines = []
        async with asyncio.timeout(5):
            while len([line for line in lines if line.startswith(b": ping")]) < 2:
                lines.append(await stream.content.readline())
    assert lines[0].startswith(b": connected")


@pytest.mark.service_settings(event_stream_poll_interval=0.05, event_stream_buffer=5)
async def test_client_kit_watch_reconnects_after_being_cut_and_misses_nothing(
    service: ServiceUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """More events at once than the buffer holds: the server cuts the stream, `watch`
    reconnects with Last-Event-ID and still yields every event once, in order."""
    caplog.set_level(logging.INFO)
    quick = Backoff(initial=0.05, max_delay=0.1)
    async with LifecycleClient(service.base_url, API_KEY, backoff=quick) as client:
        received: list[str] = []
        ready = asyncio.Event()

        async def consume() -> None:
            async for event in client.watch(last_event_id="0"):
                received.append(event["instanceId"])
                ready.set()
                if len(received) == 31:
                    return

        task = asyncio.create_task(consume())
        first = await create(service, "first")
        async with asyncio.timeout(10):
            await ready.wait()
        bulk = await create_many_at_once(service, 30)
        async with asyncio.timeout(20):
            await task
    assert received == [first, *bulk]
    assert any("events.stream_cut" in record.getMessage() for record in caplog.records)


@FAST
async def test_client_kit_watch_passes_its_filters(service: ServiceUnderTest) -> None:
    await create(service, "blue", team="blue")
    red = await create(service, "red", team="red")
    async with LifecycleClient(service.base_url, API_KEY) as client:
        stream = client.watch(labels={"team": "red"}, status=["pending"], last_event_id="0")
        async with asyncio.timeout(10):
            first = await anext(stream)
        await stream.aclose()
    assert first["instanceId"] == red and first["toStatus"] == "pending"
    assert first["id"].isdigit()


async def test_client_kit_watch_raises_on_a_bad_filter(service: ServiceUnderTest) -> None:
    async with LifecycleClient(service.base_url, API_KEY) as client:
        with pytest.raises(ValidationError) as caught:
            async for _ in client.watch(status="sleeping"):
                pass
    assert "status" in str(caught.value.details)


@pytest.mark.service_settings(
    event_stream_poll_interval=0.05, event_stream_buffer=20, event_stream_send_timeout=1
)
async def test_a_client_that_stops_reading_is_cut(
    service: ServiceUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """A raw client with a tiny receive window that never reads: the server's writes
    block, its buffer fills, and the stream is cut instead of growing."""
    caplog.set_level(logging.INFO)
    address = urlsplit(service.base_url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (address.hostname, address.port))
    request = (
        f"GET /api/events HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nAccept: text/event-stream\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    try:
        await asyncio.sleep(0.3)  # subscribed
        async with asyncio.timeout(30):
            while not any("events.stream_cut" in r.getMessage() for r in caplog.records):
                await create_many_at_once(service, 200)
                await asyncio.sleep(0.2)
    finally:
        sock.close()
