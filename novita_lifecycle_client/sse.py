"""A reader of Server-Sent Events (the `text/event-stream` format) over aiohttp.

Hand-written (about forty lines) because this package depends on aiohttp alone: the SSE
client libraries either bring another HTTP stack or do not let the caller resume with
its own `Last-Event-ID`. It follows the WHATWG rules for fields: `data` lines join with
newlines, `id` is kept across messages, `retry` sets the reconnection delay, lines
starting with `:` are comments (heartbeats), and a blank line ends a message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None
    retry: int | None  # milliseconds, when the message set it


async def messages(content: aiohttp.StreamReader) -> AsyncIterator[Message]:
    """The messages of one stream, as they arrive; ends when the stream does."""
    event, last_id = "", None
    data: list[str] = []
    retry: int | None = None
    while True:
        raw = await content.readline()
        if not raw:
            return  # a message without its blank line is incomplete: dropped, as specified
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data or retry is not None:
                yield Message(event or "message", "\n".join(data), last_id, retry)
            event, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
