"""Client-side rate limit for Novita requests: callers wait for a slot instead of failing,
the more urgent first.

The limit is a sliding window: at most `per_minute` requests *start* in any 60 seconds
(any number may be in flight). A burst may use the whole budget at once; then the next
start waits until the oldest one leaves the window. (A leaky bucket, aiolimiter's, lets a
full burst be followed by the steady rate, so up to twice the limit in one minute after a
quiet spell: a provider counting per minute would answer 429.)

Each caller says how urgent its request is (`Priority`), and starts go to the most urgent
caller waiting, first come first served within a class:

- URGENT: creates, client and policy actions, the catalogue reads they need;
- TRANSITIONAL: polls of instances in transition and the reads readiness needs;
- BACKGROUND: relist pages and polls of stable instances.

A class waits whenever a more urgent one waits. A class may also not fill the last share
of the window (`HEADROOM`): with the relist and stable polls using all they are allowed,
a burst of creates or of transitional polls still starts at once instead of queueing
behind them. The total never exceeds `per_minute` in any window, whatever the mix.

Why written here: the rate limiters on PyPI (aiolimiter, limits, pyrate-limiter) serve
waiters in arrival order, or do not wait at all, and know no classes; a window of start
times and a priority queue in front of it are the small piece needed, a few lines each.

Several processes on one PostgreSQL database share one limit: each limiter is then given
the database's window of starts (`SharedStarts`, service/db/call_window.py) and takes a
place there too before each start, with its class's headroom, so the limit and the
headroom hold over every process's starts; within a process the order is still by class.
(Across processes a class is not served before another; the headroom is what keeps places
for the more urgent ones.) When that window cannot be reached, the process goes on within
its own window alone, tries the shared one again `SHARED_RETRY_SECONDS` later, and logs
the change each way; a database outage stops little else but it, and a 429 still pauses.

A 429 calls `pause()`: until the pause ends every caller waits, whatever its class, the
429-ed one included. The window and the scheduler run on event-loop time (so tests fake it
with looptime). The pause runs on the injected `time`/`sleep` pair, the same pair the
client's retry backoff uses, so a test that fakes one fakes both. A waiter that slept
through the pause it saw goes on even if `time` did not move (a recording fake sleep), and
waits again only when the pause was extended meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time as _time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Priority(IntEnum):
    """How urgent a Novita request is; a lower value is served first."""

    URGENT = 0
    TRANSITIONAL = 1
    BACKGROUND = 2


WINDOW_SECONDS = 60.0
# After the shared window failed, how long a process counts on its own window alone.
SHARED_RETRY_SECONDS = 5.0


class SharedStarts(Protocol):
    """The starts of every process sharing the limit (service/db/call_window.py)."""

    async def take(self, *, need: int, limit: int, window: float) -> float | None:
        """Record one start if `need` of the `limit` places in the last `window` seconds
        are free (None); else the seconds until enough of them are."""
        ...
# The share of the window a class leaves free for the classes above it.
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
        shared: SharedStarts | None = None,
        window: float = WINDOW_SECONDS,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.window = window
        self.shared = shared
        self._shared_down_until: float | None = None  # loop time; None while it answers
        self._taking: asyncio.Future[float | None] | None = None  # a shared take under way
        self._starts: deque[float] = deque()  # event-loop times of the starts in the window
        # Free places a class needs in the window before it may take one.
        self._needs = {p: 1 + math.floor(per_minute * share) for p, share in HEADROOM.items()}
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

    def started_within(self, seconds: float = WINDOW_SECONDS) -> int:
        """Requests this process started in the last `seconds` (at most the window)."""
        since = asyncio.get_running_loop().time() - seconds
        return sum(1 for at in self._starts if at > since)

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
        # A place being taken in the shared window finishes its transaction first: a
        # database call cancelled halfway could leave its connection unusable, and the
        # database closes after this.
        if self._taking is not None:
            with contextlib.suppress(Exception):
                await self._taking
            self._taking = None

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
        """Hand out starts, the most urgent waiter first, while anyone waits."""
        queue = self._queue
        loop = asyncio.get_running_loop()
        while queue:
            priority, _order, turn = queue[0]
            if turn.done():
                heapq.heappop(queue)
                continue
            # Cleared before deciding: a caller arriving while the shared window answers
            # sets it again, and the wait below then ends at once.
            self._arrived.clear()
            now = loop.time()
            while self._starts and self._starts[0] <= now - self.window + 1e-9:
                self._starts.popleft()
            need = self._needs[Priority(priority)]
            over = len(self._starts) + need - self.per_minute
            # Until enough starts have left the window (this process's, then everyone's).
            wait = self._starts[over - 1] + self.window - now if over > 0 else None
            if wait is None:
                wait = await self._take_shared(need)
            if wait is None:
                # The head may have changed (or given up) while the shared window answered.
                while queue and queue[0][2].done():
                    heapq.heappop(queue)
                if queue:
                    priority, _order, turn = heapq.heappop(queue)
                    self._starts.append(loop.time())
                    turn.set_result(None)
                    self.granted_by_priority[Priority(priority)] += 1
                continue
            # Wait for the window, or until a more urgent caller comes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(wait, 0.0))

    async def _take_shared(self, need: int) -> float | None:
        """A place in the shared window: None when taken (or there is none to ask, or it
        is out of reach: this process's own window then stands alone), else the wait."""
        if self.shared is None:
            return None
        now = asyncio.get_running_loop().time()
        if self._shared_down_until is not None and now < self._shared_down_until:
            return None
        try:
            self._taking = asyncio.ensure_future(
                self.shared.take(need=need, limit=self.per_minute, window=self.window)
            )
            wait = await asyncio.shield(self._taking)
        except Exception as exc:  # whatever the database raised: go on alone for a while
            if self._shared_down_until is None:
                log.warning(
                    "limiter.shared_window_unavailable",
                    error=type(exc).__name__,
                    retry_seconds=SHARED_RETRY_SECONDS,
                )
            self._shared_down_until = now + SHARED_RETRY_SECONDS
            return None
        finally:
            if self._taking is not None and self._taking.done():
                self._taking = None
        if self._shared_down_until is not None:
            self._shared_down_until = None
            log.info("limiter.shared_window_recovered")
        return wait

    async def _wait_out_pause(self, waited_out: float | None) -> float | None:
        """Sleep until the pause ends; return the pause end this caller has slept through."""
        while (remaining := self._resume_at - self._time()) > 0:
            if self._resume_at == waited_out:
                break
            waited_out = self._resume_at
            await self._sleep(remaining)
        return waited_out
