"""The retry ladder: one step per attempt, jitter only ever later, Retry-After honoured."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from service.notifications.schedule import MAX_RETRY_AFTER, RetrySchedule, parse_retry_after
from service.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LADDER = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_default_ladder_is_the_documented_one() -> None:
    assert Settings(_env_file=None).webhook_retry_schedule == LADDER  # type: ignore[call-arg]


def test_each_failed_attempt_waits_its_step_plus_at_most_ten_percent() -> None:
    schedule = RetrySchedule(LADDER, rng=random.Random(7))
    for failed in range(1, len(LADDER)):
        for _ in range(50):
            delay = schedule.delay_after(failed)
            assert delay is not None
            assert LADDER[failed] <= delay <= schedule.max_delay_after(failed)


def test_jitter_spreads_retries() -> None:
    schedule = RetrySchedule(LADDER, rng=random.Random(1))
    assert len({schedule.delay_after(3) for _ in range(20)}) > 1


def test_the_ladder_runs_out_after_the_last_step() -> None:
    schedule = RetrySchedule(LADDER)
    assert schedule.max_attempts == 8
    assert schedule.delay_after(7) is not None
    assert schedule.delay_after(8) is None


def test_retry_after_pushes_later_but_never_earlier_and_is_capped() -> None:
    schedule = RetrySchedule((0, 5, 300), jitter_ratio=0)
    assert schedule.delay_after(1, retry_after=120) == 120
    assert schedule.delay_after(2, retry_after=1) == 300
    assert schedule.delay_after(1, retry_after=10 * MAX_RETRY_AFTER) == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ((NOW + timedelta(minutes=2)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 120.0),
        ((NOW - timedelta(minutes=2)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_header_forms(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_an_empty_ladder_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        RetrySchedule(())
