"""`usage`: GPU-hours in billing statuses (running, ready) and their estimated cost, per
day x product x region x billing mode, over a window (see `service.reports.intervals`).

Cost = GPU-hours x the per-GPU hourly price recorded when the instance was provisioned;
instances without a recorded price add hours but no cost. Open stretches count up to now.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from service.db import reports as sql
from service.db.engine import Database
from service.presenters import iso
from service.reports.intervals import DAY_SECONDS, spread_over_days
from service.reports.model import Column, Report, Section, sort_key
from service.reports.params import ReportQuery

_EPOCH_DAY = date(1970, 1, 1)
HOURS = 6
USD = 6
# Below a microsecond of GPU time a group-day is float noise from cancelling edges.
_NOISE = 1e-6


def _day_number(moment: datetime) -> int:
    return int(moment.timestamp() // DAY_SECONDS)


async def usage_report(database: Database, query: ReportQuery, *, now: datetime) -> Report:
    window = query.window
    assert window is not None
    dims = tuple(name for name in query.group_by if name != "day")
    async with sql.report_connection(database) as conn:
        rows = await sql.usage_edges(conn, dims, window, now=now)

    gpu_edges: dict[tuple[Any, ...], dict[int, tuple[float, float]]] = defaultdict(dict)
    cost_edges: dict[tuple[Any, ...], dict[int, tuple[float, float]]] = defaultdict(dict)
    width = len(dims)
    for row in rows:
        key, day = tuple(row[:width]), int(row[width])
        gpu_weight, gpu_offset, cost_weight, cost_offset = (float(v) for v in row[width + 1 :])
        gpu_edges[key][day] = (gpu_weight, gpu_offset)
        cost_edges[key][day] = (cost_weight, cost_offset)

    first_day = _day_number(window.since)
    last_day = _day_number(max(window.since, min(window.until, now)))
    assembled = []
    for key, edges in gpu_edges.items():
        gpu_seconds = spread_over_days(edges, first_day, last_day)
        cost_seconds = spread_over_days(cost_edges[key], first_day, last_day)
        per_day: list[tuple[int | None, float, float]]
        if "day" in query.group_by:
            per_day = [(day, gpu_seconds[day], cost_seconds[day]) for day in sorted(gpu_seconds)]
        else:
            per_day = [(None, sum(gpu_seconds.values()), sum(cost_seconds.values()))]
        for day_number, seconds, cost in per_day:
            if seconds < _NOISE:
                continue
            values = dict(zip(dims, key, strict=True))
            if day_number is not None:
                values["day"] = (_EPOCH_DAY + timedelta(days=day_number)).isoformat()
            labels = [values[name] for name in query.group_by]
            assembled.append((*labels, seconds / 3600, cost / 3600))

    columns = (
        *(Column(name) for name in query.group_by),
        Column("gpu_hours", HOURS),
        Column("cost_usd", USD),
    )
    group_width = len(query.group_by)
    section = Section(
        "usage", columns, tuple(sorted(assembled, key=lambda r: sort_key(r, group_width)))
    )
    parameters = {
        "since": iso(window.since),
        "until": iso(window.until),
        "groupBy": list(query.group_by),
    }
    return Report("usage", now, parameters, (section,))
