"""The HTTP/1.1 protocol uvicorn runs for this service: its httptools protocol, with each
response leaving in one write instead of two.

uvicorn writes the status line and headers when the app sends `http.response.start`, and
the body when it sends `http.response.body`: two `send()` calls, so on a small answer two
TCP segments, two wake-ups of the client, and two passes through the kernel's network
stack. Under load those writes were about a sixth of the server's time on the webhook
endpoint. `CoalescingTransport` holds what the protocol writes during one turn of the
event loop and hands it to the socket as one write at the end of that turn (the same
idea as TCP_CORK, without a system call to uncork). Nothing waits longer than the
current loop iteration: streaming responses still go out chunk by chunk as the app
awaits between them.

Hand-written because no library offers it; it wraps the transport uvicorn is given and
touches nothing else of uvicorn's.

The protocol also bounds each request's head (request line and headers): at most
`MAX_HEAD_BYTES` bytes and `MAX_HEADERS` header lines, else 431 and the connection
closes. uvicorn offers such a bound only for h11 (`h11_max_incomplete_event_size`); its
httptools protocol, and llhttp under it, accumulate a header of any size (a 20 MB header
was read whole, and four of 50 MB took the process to 423 MB). The bound is kept with the
parser's own public callbacks, which uvicorn's protocol implements and this subclass
extends (calling them first): `on_message_begin` starts a head, `on_header` counts a
line, `on_headers_complete` ends the head. `data_received` (asyncio's protocol method)
counts the bytes of every chunk that arrives while a head is still open, so a head is
refused at most one read (256 KiB) past the limit, before llhttp has buffered more.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# After a 431 the connection reads and drops what the client still sends for this long
# (so the client, still writing its head, gets the answer instead of a reset), then closes.
REFUSED_LINGER_SECONDS = 2.0
_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class CoalescingTransport(asyncio.Transport):
    """A transport that joins the writes of one loop iteration into one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand everything held to the socket now (a no-op when nothing is held)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._transport.is_closing():
            return  # the peer is gone; the socket's own transport drops writes alike
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    # -- closing: what was written goes first ----------------------------------------------

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    # -- everything else is the socket transport's -----------------------------------------

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


def refusal(message: str) -> bytes:
    body = (
        b'{"error":{"code":"REQUEST_HEADER_FIELDS_TOO_LARGE","message":"'
        + message.encode("ascii")
        + b'","details":null,"requestId":null}}'
    )
    return _REFUSAL % (len(body), body)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport`, with bounded heads."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_open = False
        self._streamed = 0  # bytes of chunks that were all head (a lower bound of its size)
        self._header_bytes = 0  # names and values of the header lines parsed so far
        self._header_count = 0
        self._refused = False
        super().connection_made(CoalescingTransport(transport, self.loop))

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused request: dropped until the connection closes
        open_before = self._head_open
        super().data_received(data)
        if self._head_open and open_before and not self._refused:
            # The head was open before this chunk and still is: all of it is head.
            # (A chunk that opens a head is not counted: at most one read of slack.)
            self._streamed += len(data)
            if self._streamed > MAX_HEAD_BYTES:
                self._refuse(f"the request head is larger than {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._streamed = 0
        self._header_bytes = 0
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count <= MAX_HEADERS and not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._refused:
            return
        if self._header_count > MAX_HEADERS:
            self._refuse(f"the request has more than {MAX_HEADERS} header lines")
        elif self._header_bytes + len(self.url) > MAX_HEAD_BYTES:
            self._refuse(f"the request head is larger than {MAX_HEAD_BYTES} bytes")
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _refuse(self, message: str) -> None:
        """Answer 431, stop reading requests from this connection, close it soon."""
        self._refused = True
        self._head_open = False
        self.headers = []  # what the parser collected of the refused head, let go now
        self.url = b""
        self.transport.write(refusal(message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_SECONDS, self.transport.close)
