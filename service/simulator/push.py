"""Signed status events pushed to a configured URL (Standard Webhooks v1).

Publishing never blocks the simulator: events go to a bounded queue drained by a few
worker tasks; a full queue drops the event, a failed delivery is logged and forgotten
(no retries: a lost event is a fault the receiver must survive). Drop, duplicate and
reorder decisions come from one `random.Random(seed)`. A reordered event is held back
and delivered right after the next event that is not held, or after two ticks
(`on_tick()`), whichever comes first: late, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from service.settings import decode_webhook_secret
from service.signatures import sign

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushMessage:
    id: str
    body: bytes


@dataclass
class PushStats:
    published: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    overflowed: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "published": self.published, "delivered": self.delivered, "failed": self.failed,
            "dropped": self.dropped, "duplicated": self.duplicated,
            "reordered": self.reordered, "overflowed": self.overflowed,
        }


class Pusher:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        seed: int,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        concurrency: int = 1,
        timeout: float = 5.0,
        queue_size: int = 1000,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._wall_time = wall_time
        self._key = decode_webhook_secret(secret)
        self._random = random.Random(seed)
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._queue: asyncio.Queue[PushMessage] = asyncio.Queue(maxsize=queue_size)
        self._held: list[tuple[PushMessage, int]] = []  # message, tick generation when held
        self._generation = 0
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.stats = PushStats()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        self._workers = [
            asyncio.create_task(self._work(), name=f"sim-push-{n}")
            for n in range(self._concurrency)
        ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every queued event has been attempted (held ones stay held)."""
        await self._queue.join()

    def on_tick(self) -> None:
        self._generation += 1
        due = [m for m, born in self._held if born <= self._generation - 2]
        if due:
            self._held = [(m, born) for m, born in self._held if born > self._generation - 2]
            for late in due:
                self._enqueue(late)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for late, _ in held:
            self._enqueue(late)

    def publish(self, event_type: str, timestamp: str, data: dict[str, Any]) -> None:
        self.stats.published += 1
        message = PushMessage(
            id=f"msg_{self._random.getrandbits(128):032x}",
            body=json.dumps(
                {"type": event_type, "timestamp": timestamp, "data": data},
                separators=(",", ":"),
            ).encode(),
        )
        roll = self._random.random()
        if roll < self.drop_rate:
            self.stats.dropped += 1
            return
        if roll < self.drop_rate + self.reorder_rate:
            self.stats.reordered += 1
            self._held.append((message, self._generation))
            return
        self._enqueue(message)
        if self._random.random() < self.duplicate_rate:
            self.stats.duplicated += 1
            self._enqueue(message)
        self._release_held()

    def _enqueue(self, message: PushMessage) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.stats.overflowed += 1
            logger.warning("simulator.push_overflow id=%s", message.id)

    async def _work(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._deliver(message)
            finally:
                self._queue.task_done()

    async def _deliver(self, message: PushMessage) -> None:
        assert self._session is not None
        # Receivers check the header timestamp against their own clock (±5 min); the
        # simulator is handed the same clock source as its receiver (wall time by default).
        timestamp = int(self._wall_time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message.id, timestamp, message.body),
        }
        try:
            async with self._session.post(self.url, data=message.body, headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    self.stats.delivered += 1
                    return
                self.stats.failed += 1
                logger.warning("simulator.push_rejected id=%s status=%s", message.id, resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.failed += 1
            logger.warning("simulator.push_failed id=%s error=%r", message.id, exc)
