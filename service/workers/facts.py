"""What a worker publishes about itself, for /health and /metrics.

Workers keep plain attributes (`paused`, counters, the time of their last sweep); this reads
the known ones without each worker implementing a reporting interface, converts times to
ages, and flags a leader whose sweeps have stopped (`overdue`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

FLAGS = ("paused", "is_leader", "by_listing")
COUNTS = (
    "applied",
    "awaiting",
    "probes",
    "ready_total",
    "timed_out_total",
    "sweeps",
    "failed_sweeps",
    "adopted_total",
    "lost_total",
    "repaired_total",
    "foreign_instances",
    "last_sweep_seconds",
    "transitional",
    "listings",
    "round_interval",
    "endpoint_reads",
)
TIMES = ("last_relist_at", "last_successful_sweep_at")
# A relist leader whose last good sweep is older than this many intervals is overdue.
OVERDUE_INTERVALS = 3


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def worker_facts(worker: object, now: datetime) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in FLAGS + COUNTS:
        value = getattr(worker, name, None)
        if isinstance(value, bool | int | float):
            facts[_camel(name)] = value
    for name in TIMES:
        if hasattr(worker, name):
            when = getattr(worker, name)
            key = _camel(name.removesuffix("_at")) + "AgeSeconds"
            facts[key] = round((now - when).total_seconds(), 3) if when else None
    interval = getattr(getattr(worker, "config", None), "interval", None)
    last_good = getattr(worker, "last_successful_sweep_at", None)
    if getattr(worker, "is_leader", False) and isinstance(interval, int | float):
        stale = (
            last_good is None or (now - last_good).total_seconds() > OVERDUE_INTERVALS * interval
        )
        facts["overdue"] = bool(stale and getattr(worker, "sweeps", 0))
    return facts


def numeric_facts(worker: object, now: datetime) -> dict[str, float]:
    """The facts as numbers (booleans as 0/1, unknown ages left out), for metrics."""
    return {
        name: float(value)
        for name, value in worker_facts(worker, now).items()
        if isinstance(value, bool | int | float)
    }
