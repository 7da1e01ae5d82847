"""`fleet`: how many instances are in each status x region x product x billing mode, now
(from the instances' status column) or at a past moment (rebuilt from the event history:
an instance is in the status its newest event up to that moment moved it to; instances
created later are not counted)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from service.db import reports as sql
from service.db.engine import Database
from service.presenters import iso
from service.reports.model import Column, Report, Section, sort_key
from service.reports.params import ReportQuery


async def fleet_report(database: Database, query: ReportQuery, *, now: datetime) -> Report:
    dims = query.group_by
    async with sql.report_connection(database) as conn:
        if query.at is None:
            counts = Counter(
                {
                    tuple(row[:-1]): int(row[-1])
                    for row in await sql.fleet_counts(conn, dims, team=query.team)
                }
            )
        else:
            counts = _replay(
                dims,
                await sql.fleet_transitions(
                    conn, [d for d in dims if d != "status"], at=query.at, team=query.team
                ),
            )
    rows = [(*key, count) for key, count in counts.items() if count > 0]
    width = len(dims)
    section = Section(
        "fleet",
        tuple(Column(name) for name in (*dims, "instances")),
        tuple(sorted(rows, key=lambda r: sort_key(r, width))),
    )
    parameters = {"at": iso(query.at or now), "groupBy": list(dims)}
    return Report("fleet", now, parameters, (section,))


def _replay(dims: tuple[str, ...], transitions: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """Count per group and status: entered minus left, over (from, to, count) transitions."""
    others = [d for d in dims if d != "status"]
    counts: Counter[tuple[Any, ...]] = Counter()
    for row in transitions:
        values = dict(zip(others, row[: len(others)], strict=True))
        from_status, to_status, count = row[len(others) :]
        for status, delta in ((to_status, count), (from_status, -count)):
            if status is None:
                continue
            values["status"] = status
            counts[tuple(values[d] for d in dims)] += int(delta)
    return counts
