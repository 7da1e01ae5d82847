"""Request heads are bounded (service.http_protocol): a huge header or too many header
lines get 431 over a real socket, the server holds no copy of what it refused, and
requests within the bounds, even sent a few bytes at a time, are served as before."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

from service.http_protocol import MAX_HEAD_BYTES, MAX_HEADERS
from tests.support.raw_http import connect, make_app, read_response
from tests.support.server import running_server


async def send_and_read(base_url: str, head: bytes, *, piece: int = 256 * 1024) -> int:
    """Send `head` in pieces (tolerating the server closing mid-way); return the status."""
    reader, writer = await connect(base_url)
    try:
        view = memoryview(head)
        try:
            for start in range(0, len(view), piece):
                writer.write(view[start : start + piece])
                await writer.drain()
        except ConnectionError:
            pass  # the server may close before the whole head is sent: its answer counts
        async with asyncio.timeout(10):
            status, headers, body = await read_response(reader)
        if status == 431:
            assert headers["connection"] == "close"
            assert json.loads(body)["error"]["code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        return status
    finally:
        writer.close()


async def test_a_20_mb_header_gets_431_and_is_not_kept() -> None:
    head = b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000_000 + b"\r\n\r\n"
    async with running_server(make_app(asyncio.Event())) as base_url:
        tracemalloc.start()
        try:
            status = await send_and_read(base_url, head)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 431
        # The server let go of the head past the bound (a read or two), not 20 MB of it.
        assert peak < 4_000_000, peak
        assert await send_and_read(base_url, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n") == 200


async def test_a_thousand_headers_get_431() -> None:
    lines = b"".join(b"X-H%d: v\r\n" % n for n in range(1000))
    async with running_server(make_app(asyncio.Event())) as base_url:
        status = await send_and_read(
            base_url, b"GET /hello HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n"
        )
        assert status == 431


async def test_a_huge_url_gets_431() -> None:
    head = b"GET /hello?q=" + b"a" * 2_000_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    async with running_server(make_app(asyncio.Event())) as base_url:
        assert await send_and_read(base_url, head) == 431


async def test_heads_within_the_bounds_are_served_even_a_byte_at_a_time() -> None:
    big = b"X-Big: " + b"b" * (MAX_HEAD_BYTES - 2000) + b"\r\n"
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(MAX_HEADERS - 1))
    async with running_server(make_app(asyncio.Event())) as base_url:
        for extra, piece in ((big, 1000), (many, 7), (big, 256 * 1024)):
            head = b"GET /hello HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"
            assert await send_and_read(base_url, head, piece=piece) == 200
