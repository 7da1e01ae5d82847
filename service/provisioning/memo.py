"""Values read from Novita kept for a while, each read once however many ask at once.

Fifty requests validated at the same moment used to miss the cache together and read the
catalogue fifty times, spending the rate limit that polls needed. Here the first miss of a
key reads it while the others wait for that read (a lock per key: asyncio's own, no more
is needed), then all of them use it. A failed read stores nothing: the next caller tries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from service.clock import Clock

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, clock: Clock, ttl: float) -> None:
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[str, tuple[float, V]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _fresh(self, key: str) -> tuple[float, V] | None:
        cached = self._entries.get(key)
        if cached is not None and self._clock.monotonic() - cached[0] < self._ttl:
            return cached
        return None

    async def get(self, key: str, read: Callable[[], Awaitable[V]]) -> V:
        """The value of `key`, read with `read()` unless a fresh one is kept."""
        cached = self._fresh(key)
        if cached is not None:
            return cached[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._fresh(key)  # read meanwhile by the caller we waited for
            if cached is not None:
                return cached[1]
            fetched_at = self._clock.monotonic()
            value = await read()
            self._entries[key] = (fetched_at, value)
            return value
