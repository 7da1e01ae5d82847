"""When the next attempt of a failed notification happens: the ladder, jitter, Retry-After.

The ladder has one entry per attempt (default: immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 10 h). The first entry is the first attempt, made as soon as the event is recorded.
After attempt n fails, attempt n+1 waits entry n plus up to `jitter_ratio` more (never
less, so "not before" stays true and tests can step a manual clock past it); jitter spreads
the retries of many notifications that failed together. A receiver's `Retry-After` pushes
the next attempt later, never earlier, capped at a day so one header cannot park a
notification forever. After the last entry the notification is dead-lettered.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

DEFAULT_JITTER_RATIO = 0.1
MAX_RETRY_AFTER = 86_400.0


class RetrySchedule:
    def __init__(
        self,
        steps: Sequence[float],
        *,
        jitter_ratio: float = DEFAULT_JITTER_RATIO,
        rng: random.Random | None = None,
    ) -> None:
        if not steps:
            raise ValueError("a retry schedule needs at least one step")
        self.steps = tuple(float(step) for step in steps)
        self.jitter_ratio = jitter_ratio
        self._rng = rng or random.Random()

    @property
    def max_attempts(self) -> int:
        return len(self.steps)

    def delay_after(
        self, failed_attempts: int, *, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait after `failed_attempts` attempts on this ladder all failed.

        None means the ladder is exhausted: dead-letter the notification.
        """
        if failed_attempts >= len(self.steps):
            return None
        base = self.steps[failed_attempts]
        delay = base * (1 + self._rng.uniform(0, self.jitter_ratio))
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def max_delay_after(self, failed_attempts: int) -> float:
        """The latest the jittered delay can be (for tests and operators)."""
        return self.steps[failed_attempts] * (1 + self.jitter_ratio)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from `now` that a `Retry-After` header asks for (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": str.isdigit() takes any script's digits
        return float(value) if len(value) <= 9 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, (when - now).total_seconds())
