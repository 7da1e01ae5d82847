"""How the Novita rate limit is shared out among the reads the workers make.

The limit (`RATE_LIMIT_PER_MINUTE`, per process) is a budget of calls a minute:

- urgent calls (creates, client and policy actions) come first; what they used over the
  last minute is measured and set aside;
- the background (polls of stable instances and relist pages) keeps what it needs, up to
  `STABLE_POLL_SHARE` of the limit: it yields the rest when something is in transition.
  Within it the relist comes first (one call sees a hundred instances, a poll one): the
  stable polls get `STABLE_POLL_SHARE` or what the background's part of the limiter's
  window leaves beside the relist, whichever is less (a tenth of the limit at least);
- instances in transition share what is left: each round of reads (one per instance, or
  one list call per page of the provider's instances when that is fewer) comes as often as
  that allows, but never sooner than `TRANSITIONAL_POLL_FLOOR`.

The limiter's priorities (`service.novita.limiter`) enforce the order; this pacing keeps
each class asking for no more than its share, so nothing waits long in the limiter.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from service.novita.limiter import HEADROOM, Priority

# Whatever the others use, transitional reads and stable polls keep this share each.
MIN_TRANSITIONAL_SHARE = 0.1
MIN_STABLE_SHARE = 0.1
# A relist spreads its pages over this share of RELIST_INTERVAL (the rest is slack for
# pages that wait behind more urgent calls).
RELIST_SPREAD = 0.8
# The share of the limiter's window background calls may fill.
BACKGROUND_SHARE = 1.0 - HEADROOM[Priority.BACKGROUND]
# Urgent demand is measured over this window.
URGENT_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class CallBudget:
    per_minute: float  # the process's rate limit
    stable_share: float  # STABLE_POLL_SHARE
    floor: float  # TRANSITIONAL_POLL_FLOOR: the shortest interval between two rounds
    slow_interval: float  # RECONCILE_INTERVAL: how often a stable instance is polled at most
    relist_interval: float  # RELIST_INTERVAL
    page_size: int = 100  # instances per list call

    def pages(self, instances: int) -> int:
        """List calls to read `instances` provider instances."""
        return max(1, math.ceil(instances / self.page_size))

    def relist_demand(self, listed: int) -> float:
        """List calls a minute while a relist of `listed` instances sweeps."""
        return self.pages(listed) * 60.0 / (self.relist_interval * RELIST_SPREAD)

    def stable_budget(self, listed: int) -> float:
        """Polls a minute the stable instances may take, beside the relist."""
        room = self.per_minute * BACKGROUND_SHARE - self.relist_demand(listed)
        share = min(self.per_minute * self.stable_share, room)
        return max(self.per_minute * MIN_STABLE_SHARE, share)

    def background_demand(self, stable: int, listed: int) -> float:
        """Calls a minute the stable polls (within their budget) and the relist ask for."""
        polls = min(stable * 60.0 / self.slow_interval, self.stable_budget(listed))
        return polls + self.relist_demand(listed)

    def transitional_budget(self, urgent_per_minute: float, background: float) -> float:
        """Calls a minute left for instances in transition."""
        kept = min(self.per_minute * self.stable_share, background)
        left = self.per_minute - urgent_per_minute - kept
        return max(self.per_minute * MIN_TRANSITIONAL_SHARE, left)

    def round_interval(self, calls_per_round: int, budget: float) -> float:
        """Seconds between rounds of `calls_per_round` reads within `budget` a minute."""
        return max(self.floor, calls_per_round * 60.0 / budget)


class RateMeter:
    """Calls over the last `window` seconds of a growing counter (e.g. the limiter's urgent
    grants), as calls a minute; fed with (monotonic time, counter total) samples."""

    def __init__(self, window: float = URGENT_WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def per_minute(self, now: float, total: int) -> float:
        self._samples.append((now, total))
        # Keep one sample at least `window` old (the baseline), drop the older ones.
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        _first_at, first_total = self._samples[0]
        return (total - first_total) * 60.0 / self.window
