"""When and how long to retry a Novita call.

Retried: errors whose class is `retryable` (5xx, timeouts, network errors, 429), up to
`max_attempts` attempts in total, with exponential backoff and jitter. A `retry_after` on the
error (429, 503) is the minimum wait; one longer than `max_retry_after` is not waited out
inside the call but raised, so the caller's own schedule (worker back-off) takes over.

Only calls that are safe to repeat are retried; the client decides per method (see the table
in `service.novita.client`). The sleep function is injected so tests record the delays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from service.novita.errors import NovitaError

log = structlog.get_logger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class _WaitAtLeastRetryAfter(wait_base):
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self._backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, NovitaError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


class RetryPolicy:
    def __init__(
        self,
        *,
        max_attempts: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        jitter: float = 0.5,
        max_retry_after: float = 60.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self._wait = _WaitAtLeastRetryAfter(
            wait_exponential_jitter(multiplier=backoff_base, max=backoff_max, jitter=jitter)
        )
        self._sleep = sleep

    def should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, NovitaError) or not error.retryable:
            return False
        return error.retry_after is None or error.retry_after <= self.max_retry_after

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        endpoint: str,
        idempotent: bool,
        on_retry: Callable[[NovitaError], None] | None = None,
    ) -> T:
        """Run `attempt`, again after retryable errors if the call is `idempotent`."""
        if not idempotent or self.max_attempts == 1:
            return await attempt()

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            assert isinstance(error, NovitaError)  # should_retry let only these through
            if on_retry is not None:
                on_retry(error)
            log.warning(
                "novita.retry_scheduled",
                endpoint=endpoint,
                attempt=state.attempt_number,
                wait=round(state.upcoming_sleep, 3),
                error=error.code,
                status=error.status,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            retry=retry_if_exception(self.should_retry),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)
