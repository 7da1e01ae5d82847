"""Raw HTTP/1.1 over a socket, for what an HTTP client library would not send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


def make_app(release: asyncio.Event) -> Starlette:
    async def hello(request: Request) -> Response:
        return PlainTextResponse(f"hello {request.query_params.get('n', '')}")

    async def stream(_request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            yield b"first piece\n"
            await release.wait()
            yield b"second piece\n"

        return StreamingResponse(pieces(), media_type="text/plain")

    return Starlette(routes=[Route("/hello", hello), Route("/stream", stream)])


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = urlsplit(base_url)
    assert address.hostname is not None and address.port is not None
    return await asyncio.open_connection(address.hostname, address.port)
