"""Client-side rate limit for Novita requests: callers wait for a slot instead of failing,
the more urgent first.

aiolimiter's leaky bucket paces request *starts* (bursts up to the per-minute budget, then
the steady rate), so any number of requests may be in flight. In front of it sits a small
priority scheduler: each caller says how urgent its request is (`Priority`), and slots go
to the most urgent caller waiting, first come first served within a class:

- URGENT: creates, client and policy actions, the catalogue reads they need;
- TRANSITIONAL: polls of instances in transition and the reads readiness needs;
- BACKGROUND: relist pages and polls of stable instances.

A class waits whenever a more urgent one waits. A class may also not fill the last share
of the bucket (`HEADROOM`): with the relist and stable polls using all they are allowed,
a burst of creates or of transitional polls still starts at once instead of queueing
behind them. The total never exceeds the bucket's budget, whatever the mix.

Why written here: aiolimiter (and the other rate limiters on PyPI) serve waiters in
arrival order (aiolimiter: smallest amount first) and know no classes; a priority queue
in front of the bucket is the small piece they lack. It only uses the bucket's public
`acquire` and `has_capacity`.

A 429 calls `pause()`: until the pause ends every caller waits, whatever its class, the
429-ed one included. The bucket and the scheduler run on event-loop time (aiolimiter's own
choice). The pause runs on the injected `time`/`sleep` pair, the same pair the client's
retry backoff uses, so a test that fakes one fakes both. A waiter that slept through the
pause it saw goes on even if `time` did not move (a recording fake sleep), and waits again
only when the pause was extended meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time as _time
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum

import structlog
from aiolimiter import AsyncLimiter

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Priority(IntEnum):
    """How urgent a Novita request is; a lower value is served first."""

    URGENT = 0
    TRANSITIONAL = 1
    BACKGROUND = 2


# The share of the bucket a class leaves free for the classes above it.
HEADROOM: Mapping[Priority, float] = {
    Priority.URGENT: 0.0,
    Priority.TRANSITIONAL: 0.05,
    Priority.BACKGROUND: 0.2,
}


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
        # Slots a class needs free in the bucket before it may take one.
        self._needs = {p: 1 + math.floor(per_minute * share) for p, share in HEADROOM.items()}
        self._slot_seconds = 60.0 / per_minute
        self._time = time
        self._sleep = sleep
        self._resume_at = 0.0
        self._waiting = 0
        self._waiting_by_priority = dict.fromkeys(Priority, 0)
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self.times_paused = 0
        self.granted_by_priority = dict.fromkeys(Priority, 0)

    @property
    def backlog(self) -> int:
        """Callers waiting for a slot right now."""
        return self._waiting

    @property
    def backlog_by_priority(self) -> dict[Priority, int]:
        return dict(self._waiting_by_priority)

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

    async def acquire(self, priority: Priority = Priority.URGENT) -> None:
        """Wait until this caller may start one request."""
        self._waiting += 1
        self._waiting_by_priority[priority] += 1
        try:
            waited_out = await self._wait_out_pause(None)
            await self._take_turn(priority)
            # A 429 may have arrived while this caller waited for its turn.
            await self._wait_out_pause(waited_out)
        finally:
            self._waiting -= 1
            self._waiting_by_priority[priority] -= 1

    async def close(self) -> None:
        """Stop the dispatcher (callers still waiting then wait forever: close last)."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    async def _take_turn(self, priority: Priority) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._order), turn))
        if self._dispatcher is None or self._dispatcher.done():
            self._arrived = asyncio.Event()  # bound to this event loop from its first wait
            self._dispatcher = asyncio.create_task(self._dispatch(), name="novita-limiter")
        self._arrived.set()
        # Cancelled while queued: the future is cancelled and the dispatcher skips it.
        await turn

    async def _dispatch(self) -> None:
        """Hand out slots, the most urgent waiter first, while anyone waits."""
        queue = self._queue
        while queue:
            priority, _order, turn = queue[0]
            if turn.done():
                heapq.heappop(queue)
                continue
            need = self._needs[Priority(priority)]
            if need > 1 and not self._bucket.has_capacity(need):
                # Not enough headroom for this class yet: look again when the bucket has
                # drained a little, or at once when a more urgent caller arrives.
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self._slot_seconds / 4)
                continue
            await self._bucket.acquire()
            # The slot goes to whoever is most urgent now (someone may have come meanwhile).
            while queue:
                priority, _order, turn = heapq.heappop(queue)
                if not turn.done():
                    turn.set_result(None)
                    self.granted_by_priority[Priority(priority)] += 1
                    break

    async def _wait_out_pause(self, waited_out: float | None) -> float | None:
        """Sleep until the pause ends; return the pause end this caller has slept through."""
        while (remaining := self._resume_at - self._time()) > 0:
            if self._resume_at == waited_out:
                break
            waited_out = self._resume_at
            await self._sleep(remaining)
        return waited_out
