"""Counters of the Novita client and the frozen snapshot `/health` and `/metrics` read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class ClientStatus:
    breaker_state: str
    breaker_retry_after: float | None
    breaker_times_opened: int
    limiter_backlog: int
    limiter_paused_for: float
    requests: int
    retries: int
    errors: int
    errors_by_code: Mapping[str, int] = field(default_factory=dict)
    requests_by_endpoint: Mapping[str, int] = field(default_factory=dict)


class ClientCounters:
    """Plain in-process counters: one event loop, so no locking is needed."""

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.errors = 0
        self.errors_by_code: Counter[str] = Counter()
        self.requests_by_endpoint: Counter[str] = Counter()

    def request_sent(self, endpoint: str) -> None:
        self.requests += 1
        self.requests_by_endpoint[endpoint] += 1

    def retry_scheduled(self) -> None:
        self.retries += 1

    def error(self, code: str) -> None:
        self.errors += 1
        self.errors_by_code[code] += 1

    def frozen_errors_by_code(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self.errors_by_code))

    def frozen_requests_by_endpoint(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self.requests_by_endpoint))
