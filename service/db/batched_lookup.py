"""Coalescing concurrent point lookups into one query per round trip (PostgreSQL).

Many requests asking for one row each would otherwise each take a pooled connection, wait
a network round trip and pay the per-statement cost on both sides. Here every key asked
for while a lookup is already under way waits for the next one, and each lookup fetches
all the keys gathered so far with one query taking a text array, so under load one round
trip serves dozens of requests. With no load a lookup starts at once: nothing waits for a
batch to fill.

Written by hand because nothing in the asyncpg/SQLAlchemy ecosystem does this: it is the
DataLoader idea (batch the keys requested in one tick) kept to the few lines this service
needs. Each lookup runs in its own task, so a requester that gives up (a client
disconnecting) neither cancels the query nor loses the answer for the others waiting on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

# Which of the keys a fetched row answers (a row may answer more than one).
KeysOf = Callable[[tuple[Any, ...]], Iterable[Any]]
FetchMany = Callable[[list[Any]], Awaitable[list[tuple[Any, ...]]]]


class BatchedLookup:
    def __init__(
        self,
        fetch_many: FetchMany,
        keys_of: KeysOf,
        *,
        max_in_flight: int = 2,
        max_keys: int = 500,
    ) -> None:
        """`fetch_many(keys)` returns the rows for any of the keys; `keys_of(row)` says
        which keys a returned row answers."""
        self._fetch_many = fetch_many
        self._keys_of = keys_of
        self._max_in_flight = max_in_flight
        self._max_keys = max_keys
        self._waiting: dict[Any, list[asyncio.Future[tuple[Any, ...] | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self.queries = 0  # statements sent: fewer than lookups asked for when coalescing

    async def get(self, key: Any) -> tuple[Any, ...] | None:
        """The row for `key` (as a tuple of column values), or None."""
        if self._closed:
            raise RuntimeError("the lookup is closed")
        future: asyncio.Future[tuple[Any, ...] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        self._start_lookups()
        return await future

    def _start_lookups(self) -> None:
        while self._waiting and len(self._running) < self._max_in_flight:
            if len(self._waiting) <= self._max_keys:
                batch, self._waiting = self._waiting, {}
            else:
                keys = list(self._waiting)[: self._max_keys]
                batch = {key: self._waiting.pop(key) for key in keys}
            task = asyncio.get_running_loop().create_task(self._lookup(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._closed:
            self._start_lookups()

    async def _lookup(self, batch: dict[Any, list[asyncio.Future[tuple[Any, ...] | None]]]) -> None:
        try:
            self.queries += 1
            rows = await self._fetch_many(list(batch))
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RuntimeError("the lookup was cancelled")
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        found: dict[Any, tuple[Any, ...]] = {}
        for row in rows:
            for key in self._keys_of(row):
                if key in batch:
                    found.setdefault(key, row)
        for key, futures in batch.items():
            answer = found.get(key)
            for future in futures:
                if not future.done():
                    future.set_result(answer)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(RuntimeError("the lookup is closed"))
        self._waiting = {}
