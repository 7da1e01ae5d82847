"""Circuit breaker for Novita calls.

CLOSED → OPEN after `failure_threshold` consecutive availability failures (5xx, timeouts,
network errors); OPEN fails fast for `recovery_timeout` seconds, then lets trial calls through
(HALF_OPEN); `success_threshold` successes close it, one failure reopens it.

Outcomes are classified by the error's `availability_failure` flag: business answers
(capacity, validation, not found, auth) prove Novita is up and count as successes; 429 and
non-Novita exceptions (cancellation, bugs) are neutral. Every admission carries the breaker's
generation, so an answer to a call admitted before the last state change is ignored: a slow
success from before the trip must not help close a breaker that is half-open now.

Hand-written because pybreaker, aiobreaker and purgatory do not take an injected clock
together with a half-open success threshold and our own error classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import structlog

from service.clock import Clock, SystemClock
from service.novita.errors import NovitaCircuitOpenError, NovitaError

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Admission:
    """Proof that a call was let through, to hand back with its outcome."""

    generation: int
    trial: bool


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        success_threshold: int = 3,
        clock: Clock | None = None,
        name: str = "novita",
    ) -> None:
        if failure_threshold < 1 or success_threshold < 1 or recovery_timeout < 0:
            raise ValueError("thresholds must be >= 1 and the recovery timeout >= 0")
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.success_threshold = success_threshold
        self.name = name
        self._clock: Clock = clock or SystemClock()
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._successes = 0
        self._trials_in_flight = 0
        self.opened_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.retry_after_seconds == 0.0:
            self._move_to(BreakerState.HALF_OPEN)
            log.info("breaker.half_open", breaker=self.name)
        return self._state

    @property
    def retry_after_seconds(self) -> float | None:
        """Seconds until the breaker lets a trial call through; None unless it is OPEN."""
        if self._state is not BreakerState.OPEN or self.opened_at is None:
            return None
        return max(0.0, self.opened_at + self.recovery_timeout - self._clock.monotonic())

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def check(self) -> None:
        """Fail fast while open, without taking a trial slot."""
        if self.state is BreakerState.OPEN:
            raise self._open_error()

    def admit(self) -> Admission:
        """Let one call through, or raise `NovitaCircuitOpenError`.

        In HALF_OPEN at most `success_threshold` trial calls run at once; more would only
        pile onto a provider that is maybe still down.
        """
        state = self.state
        if state is BreakerState.OPEN:
            raise self._open_error()
        if state is BreakerState.HALF_OPEN:
            if self._trials_in_flight >= self.success_threshold:
                raise self._open_error()
            self._trials_in_flight += 1
            return Admission(self._generation, trial=True)
        return Admission(self._generation, trial=False)

    def record(self, admission: Admission, error: BaseException | None) -> None:
        """Report how an admitted call ended: None for success, else the exception."""
        if admission.trial and admission.generation == self._generation:
            self._trials_in_flight -= 1
        if admission.generation != self._generation:
            return
        if error is None:
            self._on_success()
        elif isinstance(error, NovitaError) and error.availability_failure:
            self._on_failure()
        elif isinstance(error, NovitaError) and not (
            error.retryable or isinstance(error, NovitaCircuitOpenError)
        ):
            self._on_success()  # a business answer: Novita is up

    def _on_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.success_threshold:
                self._move_to(BreakerState.CLOSED)
                log.info("breaker.closed", breaker=self.name)
        else:
            self._failures = 0

    def _on_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        failures = self._failures
        self._move_to(BreakerState.OPEN)
        self.opened_at = self._clock.monotonic()
        self.times_opened += 1
        log.warning(
            "breaker.opened",
            breaker=self.name,
            consecutive_failures=failures,
            retry_after=self.recovery_timeout,
        )

    def _move_to(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._failures = 0
        self._successes = 0
        self._trials_in_flight = 0
        if state is not BreakerState.OPEN:
            self.opened_at = None

    def _open_error(self) -> NovitaCircuitOpenError:
        retry_after = self.retry_after_seconds
        if retry_after is None:
            # HALF_OPEN with every trial slot taken: the trials answer within one timeout.
            retry_after = 1.0
        return NovitaCircuitOpenError(
            f"Novita calls are suspended by the circuit breaker; retry in {retry_after:.0f} s",
            retry_after=retry_after,
        )
