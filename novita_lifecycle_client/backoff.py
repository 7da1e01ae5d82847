"""Polling delays: exponential, jittered, capped.

Poll number n (from 0) waits `min(max_delay, initial * factor**n)`, less up to `jitter` of
it at random, so many waiting clients spread out instead of polling in step; the cap keeps
the gap between polls (how late a change is seen) bounded however long the wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.25  # fraction of each delay that may be taken off at random
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.max_delay < self.initial:
            raise ValueError("need 0 < initial <= max_delay")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def base(self, attempt: int) -> float:
        """The delay before jitter for poll `attempt` (0 = the first wait)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        delay = self.initial
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.max_delay:
                return self.max_delay
        return min(delay, self.max_delay)

    def delay(self, attempt: int) -> float:
        base = self.base(attempt)
        return base * (1 - self.jitter * self.random())

    def delays(self) -> Iterator[float]:
        """An endless schedule: `delay(0), delay(1), ...`."""
        attempt = 0
        while True:
            yield self.delay(attempt)
            attempt += 1
