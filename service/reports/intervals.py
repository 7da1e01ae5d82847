"""Usage time: its definition one instance at a time (billing intervals from an event
history, clipped to a window, split by UTC day) and `spread_over_days`, which turns the
per-day edge sums `service.db.reports.usage_edges` computes in bulk into the same numbers.

The tests hold the bulk path equal to the definition on random histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta

from service.domain import BILLING_STATUSES, Status

Interval = tuple[datetime, datetime]
DAY_SECONDS = 86400


def billing_intervals(
    history: Iterable[tuple[datetime, Status]], *, now: datetime
) -> list[Interval]:
    """[start, end) of each stretch in a billing status; `history` is (at, to_status) in
    event order. Each event's status lasts until the next event; the last one until `now`."""
    events = list(history)
    intervals = []
    for index, (at, status) in enumerate(events):
        if status not in BILLING_STATUSES:
            continue
        end = events[index + 1][0] if index + 1 < len(events) else now
        if end > at:
            intervals.append((at, end))
    return intervals


def clip(interval: Interval, since: datetime, until: datetime) -> Interval | None:
    """The part of `interval` inside [since, until), or None when they do not overlap."""
    start, end = max(interval[0], since), min(interval[1], until)
    return (start, end) if end > start else None


def split_by_day(interval: Interval) -> list[tuple[date, float]]:
    """Seconds of `interval` in each UTC day it touches, in day order (no empty days)."""
    start, end = (moment.astimezone(UTC) for moment in interval)
    parts = []
    while start < end:
        midnight = datetime.combine(start.date() + timedelta(days=1), time(), tzinfo=UTC)
        stop = min(end, midnight)
        parts.append((start.date(), (stop - start).total_seconds()))
        start = stop
    return parts


def spread_over_days(
    edges: Mapping[int, tuple[float, float]], first_day: int, last_day: int
) -> dict[int, float]:
    """Seconds (or any weighted seconds) per day from per-day edge sums.

    `edges[day]` = (weight, offset): the signed weights of the stretch edges on that day
    (ends positive, starts negative) and the sum of weight x seconds since that midnight.
    A day gets its own offsets plus a whole day for each weight still to come after it,
    i.e. for each stretch that started by then and ends later. Days are numbered from
    1970-01-01; every edge must lie within [first_day, last_day].
    """
    totals = {}
    later = 0.0
    for day in range(last_day, first_day - 1, -1):
        weight, offset = edges.get(day, (0.0, 0.0))
        totals[day] = offset + DAY_SECONDS * later
        later += weight
    return totals
