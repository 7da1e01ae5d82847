"""Retry policy: what is retried, how many times, and how long it waits (recorded, not slept)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from service.novita.errors import (
    NovitaCapacityError,
    NovitaCircuitOpenError,
    NovitaError,
    NovitaRateLimitedError,
    NovitaServerError,
    NovitaTimeoutError,
)
from service.novita.retry import RetryPolicy


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing(
    *errors: NovitaError, result: str = "ok"
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, attempt


async def test_retries_server_errors_with_growing_jittered_backoff() -> None:
    sleep = Recorder()
    policy = RetryPolicy(max_attempts=3, backoff_base=0.5, jitter=0.5, sleep=sleep)
    calls, attempt = failing(NovitaServerError(status=500), NovitaTimeoutError())
    retried: list[NovitaError] = []
    result = await policy.call(attempt, endpoint="GET /x", idempotent=True, on_retry=retried.append)
    assert result == "ok"
    assert len(calls) == 3
    assert len(retried) == 2
    assert 0.5 <= sleep.delays[0] <= 1.0
    assert 1.0 <= sleep.delays[1] <= 1.5


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleep = Recorder()
    policy = RetryPolicy(max_attempts=3, sleep=sleep)
    calls, attempt = failing(*(NovitaServerError(status=500) for _ in range(5)))
    with pytest.raises(NovitaServerError):
        await policy.call(attempt, endpoint="GET /x", idempotent=True)
    assert len(calls) == 3
    assert len(sleep.delays) == 2


async def test_retry_after_is_the_minimum_wait() -> None:
    sleep = Recorder()
    policy = RetryPolicy(max_attempts=2, sleep=sleep)
    calls, attempt = failing(NovitaRateLimitedError(status=429, retry_after=7.0))
    await policy.call(attempt, endpoint="GET /x", idempotent=True)
    assert len(calls) == 2
    assert sleep.delays == [7.0]


async def test_a_retry_after_longer_than_the_cap_is_raised_not_waited() -> None:
    sleep = Recorder()
    policy = RetryPolicy(max_attempts=3, max_retry_after=60, sleep=sleep)
    calls, attempt = failing(NovitaRateLimitedError(status=429, retry_after=600.0))
    with pytest.raises(NovitaRateLimitedError):
        await policy.call(attempt, endpoint="GET /x", idempotent=True)
    assert len(calls) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    "error",
    [NovitaCapacityError(status=400), NovitaCircuitOpenError(retry_after=30.0)],
    ids=["business", "circuit-open"],
)
async def test_non_retryable_errors_are_raised_at_once(error: NovitaError) -> None:
    sleep = Recorder()
    calls, attempt = failing(error)
    with pytest.raises(type(error)):
        await RetryPolicy(sleep=sleep).call(attempt, endpoint="GET /x", idempotent=True)
    assert len(calls) == 1


async def test_non_idempotent_calls_are_never_retried() -> None:
    sleep = Recorder()
    calls, attempt = failing(NovitaServerError(status=500))
    with pytest.raises(NovitaServerError):
        await RetryPolicy(sleep=sleep).call(attempt, endpoint="POST /create", idempotent=False)
    assert len(calls) == 1
    assert sleep.delays == []
