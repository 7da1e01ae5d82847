"""The loop every worker runs in (STYLE habit 7).

A worker is an object with a `name`, an `async run_once() -> int` that does one batch of
work and returns how much it did, and `figures(now)`: what it tells `/health` and
`/metrics` about itself (camelCase names; times as ages in seconds). `WorkerLoop` calls
`run_once` until `stop()`:

- when a batch did work, the next one starts at once; when it did none, the loop waits
  `idle_interval` seconds (or until `stop()` / `wake()`),
- a worker that shares the process with request handling can rest `busy_pause` seconds
  after a batch that did work (only `stop()` ends that rest early, not `wake()`), so its
  work gathers into fewer, larger batches instead of following every wake,
- an exception in one iteration is logged with its traceback and followed by a backoff
  that grows to `max_backoff`; it never ends the loop. A database outage is not a bug: it
  is logged as one line when it starts (no traceback, not once per pass), and the loop
  says in one line when an iteration succeeds again,
- cancellation is never swallowed, and `stop()` only sets an event (and calls the loop's
  `on_stop`, with which a worker may end a long batch at a safe point): the batch in
  progress (and its database write) finishes before the loop returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from service.backoff import backoff_seconds
from service.db.outage import describe, is_database_outage

log = structlog.get_logger(__name__)


# One figure a worker reports: a flag, a count, a duration or age in seconds (None: not yet).
Figure = bool | int | float | None
Figures = dict[str, Figure]


def age_seconds(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 3) if then is not None else None


class Worker(Protocol):
    name: str

    async def run_once(self) -> int:
        """Do one batch of work; return how many items were handled."""
        ...

    def figures(self, now: datetime) -> Figures:
        """What /health shows and /metrics exports about this worker."""
        ...


class WorkerLoop:
    def __init__(
        self,
        worker: Worker,
        *,
        idle_interval: float = 1.0,
        error_backoff: float = 1.0,
        max_backoff: float = 60.0,
        busy_pause: float = 0.0,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.worker = worker
        # Called by `stop()`, for a worker whose one batch can outlast the grace period
        # (the relist's paced sweep) to end it early and cleanly.
        self.on_stop = on_stop
        self.idle_interval = idle_interval
        self.busy_pause = busy_pause
        self.error_backoff = error_backoff
        self.max_backoff = max_backoff
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.iterations = 0
        self.failures = 0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self.on_stop is not None:
            self.on_stop()

    def wake(self) -> None:
        """Start the next batch now instead of after the idle wait (e.g. new work arrived)."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def figures(self, now: datetime) -> Figures:
        """The loop's own counts, then its worker's figures."""
        own: Figures = {"iterations": self.iterations, "failures": self.failures}
        return own | self.worker.figures(now)

    async def run(self) -> None:
        log.info("worker.started", worker=self.worker.name)
        consecutive_failures = 0
        in_outage = False
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                done = await self.worker.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                consecutive_failures += 1
                self.failures += 1
                delay = backoff_seconds(
                    consecutive_failures, base=self.error_backoff, cap=self.max_backoff
                )
                if not is_database_outage(error):
                    log.exception(
                        "worker.iteration_failed", worker=self.worker.name, retry_in=delay
                    )
                elif not in_outage:
                    in_outage = True
                    log.warning(
                        "worker.database_unavailable",
                        worker=self.worker.name,
                        error=describe(error),
                        retry_in=delay,
                    )
                await self._pause(delay)
                continue
            self.iterations += 1
            if consecutive_failures:
                log.info(
                    "worker.recovered", worker=self.worker.name, failed_passes=consecutive_failures
                )
            consecutive_failures = 0
            in_outage = False
            if not done:
                await self._pause(self.idle_interval)
            elif self.busy_pause:
                await self._rest(self.busy_pause)
        log.info("worker.stopped", worker=self.worker.name)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _rest(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


class WorkerGroup:
    """Runs several loops as tasks; `stop()` asks each to finish and waits for them."""

    def __init__(self, loops: list[WorkerLoop], *, grace_period: float = 30.0) -> None:
        self.loops = loops
        self.grace_period = grace_period
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(loop.run(), name=f"worker:{loop.worker.name}")
            for loop in self.loops
        ]

    async def stop(self) -> None:
        for loop in self.loops:
            loop.stop()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=self.grace_period)
        for task in pending:  # a batch stuck past the grace period is cancelled
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
