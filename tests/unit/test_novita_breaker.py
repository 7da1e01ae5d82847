"""Circuit breaker transitions, stepped with a ManualClock."""

from __future__ import annotations

import pytest

from service.clock import ManualClock
from service.novita.breaker import BreakerState, CircuitBreaker
from service.novita.errors import (
    NovitaAuthenticationError,
    NovitaBadRequestError,
    NovitaCapacityError,
    NovitaCircuitOpenError,
    NovitaNetworkError,
    NovitaNotFoundError,
    NovitaRateLimitedError,
    NovitaServerError,
    NovitaTimeoutError,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def breaker(clock: ManualClock) -> CircuitBreaker:
    return CircuitBreaker(clock=clock)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record(breaker.admit(), NovitaServerError(status=500))


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record(breaker.admit(), None)


def trip(breaker: CircuitBreaker, clock: ManualClock) -> None:
    fail(breaker, 5)
    assert breaker.state is BreakerState.OPEN


def test_four_failures_keep_it_closed_and_the_fifth_opens_it(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 4
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == clock.monotonic()
    assert breaker.retry_after_seconds == 60.0


@pytest.mark.parametrize(
    "error",
    [NovitaTimeoutError(), NovitaNetworkError(), NovitaServerError(status=503)],
    ids=["timeout", "network", "503"],
)
def test_every_availability_failure_counts(breaker: CircuitBreaker, error: Exception) -> None:
    for _ in range(5):
        breaker.record(breaker.admit(), error)
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize(
    "error",
    [
        NovitaCapacityError(status=400, reason="INSUFFICIENT_RESOURCE"),
        NovitaBadRequestError(status=400, reason="VALIDATOR_PARAM"),
        NovitaNotFoundError(status=404),
        NovitaAuthenticationError(status=401),
        NovitaRateLimitedError(status=429, retry_after=1.0),
    ],
    ids=["capacity", "validation", "not-found", "auth", "429"],
)
def test_business_errors_and_429_never_open_it(breaker: CircuitBreaker, error: Exception) -> None:
    for _ in range(20):
        breaker.record(breaker.admit(), error)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


def test_a_success_or_business_answer_resets_the_failure_streak(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    succeed(breaker)
    fail(breaker, 4)
    breaker.record(breaker.admit(), NovitaCapacityError(status=400))
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_429_neither_counts_nor_resets_the_streak(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    breaker.record(breaker.admit(), NovitaRateLimitedError(status=429))
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_open_fails_fast_with_time_until_half_open(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    trip(breaker, clock)
    clock.advance(20)
    with pytest.raises(NovitaCircuitOpenError) as caught:
        breaker.admit()
    assert caught.value.retry_after == pytest.approx(40.0)
    assert caught.value.code == "NOVITA_CIRCUIT_OPEN"
    with pytest.raises(NovitaCircuitOpenError):
        breaker.check()


def test_half_open_after_the_recovery_timeout(breaker: CircuitBreaker, clock: ManualClock) -> None:
    trip(breaker, clock)
    clock.advance(59.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_after_seconds is None
    breaker.check()  # does not raise


def test_three_successes_in_half_open_close_it(breaker: CircuitBreaker, clock: ManualClock) -> None:
    trip(breaker, clock)
    clock.advance(60)
    succeed(breaker, 2)
    assert breaker.state is BreakerState.HALF_OPEN
    succeed(breaker, 1)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_at is None


def test_one_failure_in_half_open_reopens_it(breaker: CircuitBreaker, clock: ManualClock) -> None:
    trip(breaker, clock)
    clock.advance(60)
    succeed(breaker, 2)
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after_seconds == 60.0
    assert breaker.times_opened == 2


def test_half_open_admits_at_most_the_success_threshold_at_once(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    trip(breaker, clock)
    clock.advance(60)
    trials = [breaker.admit() for _ in range(3)]
    with pytest.raises(NovitaCircuitOpenError):
        breaker.admit()
    breaker.record(trials[0], None)
    breaker.record(breaker.admit(), None)  # the freed slot is usable again


def test_a_cancelled_trial_frees_its_slot_without_counting(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    trip(breaker, clock)
    clock.advance(60)
    for _ in range(3):
        breaker.record(breaker.admit(), KeyboardInterrupt())
    assert breaker.state is BreakerState.HALF_OPEN
    succeed(breaker, 3)
    assert breaker.state is BreakerState.CLOSED


def test_answers_to_calls_admitted_before_a_state_change_are_ignored(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    stale = [breaker.admit() for _ in range(3)]
    trip(breaker, clock)
    clock.advance(60)
    for admission in stale:
        breaker.record(admission, None)
    assert breaker.state is BreakerState.HALF_OPEN


def test_parameters_are_configurable(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=2, recovery_timeout=5, success_threshold=1, clock=clock
    )
    fail(breaker, 2)
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    succeed(breaker, 1)
    assert breaker.state is BreakerState.CLOSED
