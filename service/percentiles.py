"""Percentiles by linear interpolation between closest ranks (as PostgreSQL's
`percentile_cont` and numpy's default): the same definition whichever engine computes it."""

from __future__ import annotations

import math
from collections.abc import Sequence


def neighbour_ranks(count: int, q: float) -> tuple[int, int]:
    """The 1-based ranks of the two sorted values the q-quantile lies between."""
    if count < 1 or not 0.0 <= q <= 1.0:
        raise ValueError("need count >= 1 and 0 <= q <= 1")
    position = q * (count - 1)
    return math.floor(position) + 1, math.ceil(position) + 1


def interpolate(low: float, high: float, count: int, q: float) -> float:
    """The q-quantile given the values at `neighbour_ranks(count, q)`."""
    position = q * (count - 1)
    return low + (high - low) * (position - math.floor(position))


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile of ascending `sorted_values`; None when there are none."""
    if not sorted_values:
        return None
    low, high = neighbour_ranks(len(sorted_values), q)
    return interpolate(sorted_values[low - 1], sorted_values[high - 1], len(sorted_values), q)
