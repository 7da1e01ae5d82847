"""The delay before trying again after consecutive failures."""

from __future__ import annotations


def backoff_seconds(
    failures: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """`base` doubled for each failure after the first, at most `cap`; never sooner than
    the server asked (`retry_after`)."""
    delay: float = min(cap, base * 2.0 ** max(failures - 1, 0))
    if retry_after:
        delay = max(delay, retry_after)
    return delay
