"""Fault injection for the v1 API: latency, 5xx, 429, hangs, a request-per-minute limit.

Every random decision draws from one `random.Random(seed)`, so a run with the same seed
and the same request sequence injects the same faults.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

from service.clock import Clock


@dataclass
class Faults:
    """Mutable at run time (Python attribute, `PUT /_sim/faults`, CLI flags)."""

    latency: float = 0.0  # seconds added to every request
    error_rate: float = 0.0  # chance of 500 UNKNOWN
    rate_limit_rate: float = 0.0  # chance of 429 RATE_LIMIT_EXCEEDED
    retry_after: int = 1  # Retry-After seconds on injected 429s
    hang_rate: float = 0.0  # chance a request hangs for hang_seconds, then 504
    hang_seconds: float = 300.0
    create_500_after_create: int = 0  # next N creates create the instance, then answer 500
    # Next N start/stop/restart/delete calls take effect, then answer 500 (a lost answer).
    action_500_after_action: int = 0
    malformed_products: int = 0  # products listed with fields no client can parse
    rate_limit_per_minute: int | None = None  # sliding window; None = off

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, checking names and types; raises ValueError."""
        known = {f.name: f for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}")
            checked[name] = _check(name, value)
        for name, value in checked.items():
            setattr(self, name, value)


_RATES = {"error_rate", "rate_limit_rate", "hang_rate"}
_INTS = {
    "retry_after", "create_500_after_create", "action_500_after_action", "malformed_products"
}


def _check(name: str, value: Any) -> Any:
    if name == "rate_limit_per_minute":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("rate_limit_per_minute must be a positive integer or null")
        return value
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if name in _RATES and value > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return float(value)


@dataclass(frozen=True)
class Verdict:
    """What to do to one request before handling it."""

    delay: float = 0.0
    hang: float = 0.0
    status: int = 0  # 0 = handle normally; else answer this status
    retry_after: int = 0


PASS = Verdict()


class FaultInjector:
    def __init__(self, faults: Faults, seed: int, clock: Clock) -> None:
        self.faults = faults
        self._random = random.Random(seed)
        self._clock = clock
        self._window: deque[float] = deque()

    def reseed(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._window.clear()

    def judge(self) -> Verdict:
        """Decide the fate of one incoming request (cheap when no fault is set)."""
        f = self.faults
        limited = self._over_rate_limit(f.rate_limit_per_minute)
        if limited:
            return Verdict(delay=f.latency, status=429, retry_after=limited)
        if f.hang_rate and self._random.random() < f.hang_rate:
            return Verdict(hang=f.hang_seconds)
        if f.rate_limit_rate and self._random.random() < f.rate_limit_rate:
            return Verdict(delay=f.latency, status=429, retry_after=f.retry_after)
        if f.error_rate and self._random.random() < f.error_rate:
            return Verdict(delay=f.latency, status=500)
        if f.latency:
            return Verdict(delay=f.latency)
        return PASS

    def take_create_500(self) -> bool:
        """True if this create must answer 500 after creating (consumes one)."""
        if self.faults.create_500_after_create > 0:
            self.faults.create_500_after_create -= 1
            return True
        return False

    def take_action_500(self) -> bool:
        """True if this action must answer 500 after taking effect (consumes one)."""
        if self.faults.action_500_after_action > 0:
            self.faults.action_500_after_action -= 1
            return True
        return False

    def _over_rate_limit(self, per_minute: int | None) -> int:
        """0 if the request may pass (and is counted), else the Retry-After seconds."""
        if per_minute is None:
            if self._window:
                self._window.clear()
            return 0
        now = self._clock.monotonic()
        while self._window and self._window[0] <= now - 60.0:
            self._window.popleft()
        if len(self._window) >= per_minute:
            return max(1, math.ceil(self._window[0] + 60.0 - now))
        self._window.append(now)
        return 0
