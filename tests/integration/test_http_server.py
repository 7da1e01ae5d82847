"""The HTTP server as `serve` runs it (uvicorn with service.http_protocol), over loopback:
answers arrive whole, on kept-alive and closing connections, and a streamed answer
arrives piece by piece rather than when the stream ends."""

from __future__ import annotations

import asyncio

from tests.support.raw_http import connect, make_app, read_response
from tests.support.server import running_server


async def test_answers_on_a_kept_alive_connection_arrive_whole() -> None:
    async with running_server(make_app(asyncio.Event())) as base_url:
        reader, writer = await connect(base_url)
        try:
            for n in range(5):
                writer.write(f"GET /hello?n={n} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                async with asyncio.timeout(5):
                    status, headers, body = await read_response(reader)
                assert (status, body) == (200, f"hello {n}".encode())
                assert headers["content-type"].startswith("text/plain")
        finally:
            writer.close()


async def test_an_answer_on_a_closing_connection_arrives_before_the_close() -> None:
    async with running_server(make_app(asyncio.Event())) as base_url:
        reader, writer = await connect(base_url)
        try:
            writer.write(b"GET /hello?n=last HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(5):
                status, _headers, body = await read_response(reader)
                assert (status, body) == (200, b"hello last")
                assert await reader.read() == b""  # then the server closes
        finally:
            writer.close()


async def test_a_streamed_answer_is_sent_piece_by_piece() -> None:
    release = asyncio.Event()
    async with running_server(make_app(release)) as base_url:
        reader, writer = await connect(base_url)
        try:
            writer.write(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                assert b"transfer-encoding: chunked" in head.lower()
                # The first piece arrives while the app still holds back the second.
                first = await reader.readuntil(b"first piece\n")
            assert first.endswith(b"first piece\n")
            assert not release.is_set()
            release.set()
            async with asyncio.timeout(5):
                rest = await reader.readuntil(b"0\r\n\r\n")
            assert b"second piece\n" in rest
        finally:
            writer.close()
