"""Client-side rate limit for Novita requests: callers wait for a slot instead of failing.

aiolimiter's leaky bucket paces request *starts* (bursts up to the per-minute budget, then
the steady rate), so any number of requests may be in flight. A 429 calls `pause()`: until the
pause ends every caller waits, the 429-ed one included.

The bucket runs on event-loop time (aiolimiter's own choice). The pause runs on the injected
`time`/`sleep` pair, the same pair the client's retry backoff uses, so a test that fakes one
fakes both. A waiter that slept through the pause it saw goes on even if `time` did not move
(a recording fake sleep), and waits again only when the pause was extended meanwhile.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Awaitable, Callable

import structlog
from aiolimiter import AsyncLimiter

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    def __init__(
        self,
        per_minute: int = 100,
        *,
        time: Callable[[], float] = _time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._bucket = AsyncLimiter(per_minute, 60)
        self._time = time
        self._sleep = sleep
        self._resume_at = 0.0
        self._waiting = 0
        self.times_paused = 0

    @property
    def backlog(self) -> int:
        """Callers waiting for a slot right now."""
        return self._waiting

    @property
    def paused_for(self) -> float:
        """Seconds the current 429 pause has left (0 when not paused)."""
        return max(0.0, self._resume_at - self._time())

    def pause(self, seconds: float) -> None:
        """Hold every caller for `seconds` (a 429's Retry-After); never shortens a pause."""
        resume_at = self._time() + max(0.0, seconds)
        if resume_at > self._resume_at:
            self._resume_at = resume_at
            self.times_paused += 1
            log.warning("limiter.paused", seconds=seconds)

    async def acquire(self) -> None:
        """Wait until this caller may start one request."""
        self._waiting += 1
        try:
            waited_out = await self._wait_out_pause(None)
            await self._bucket.acquire()
            # A 429 may have arrived while this caller waited in the bucket.
            await self._wait_out_pause(waited_out)
        finally:
            self._waiting -= 1

    async def _wait_out_pause(self, waited_out: float | None) -> float | None:
        """Sleep until the pause ends; return the pause end this caller has slept through."""
        while (remaining := self._resume_at - self._time()) > 0:
            if self._resume_at == waited_out:
                break
            waited_out = self._resume_at
            await self._sleep(remaining)
        return waited_out
