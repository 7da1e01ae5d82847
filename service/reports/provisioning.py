"""`provisioning`: for instances requested in the window, how often and how fast they came
up, how often they landed outside the preferred region; and, from the provisioner's events
in the window, capacity refusals per region x product and failures per reason.

Outcomes per instance: succeeded (reached `running`), failed (never ran; a `failed`
event), cancelled (never ran; deleted by the client), in_progress (the rest: not yet
running). success_rate = succeeded / (succeeded + failed); fallback_rate = fallbacks /
instances placed in a region while a preferred region was asked for.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.db import reports as sql
from service.db.engine import Database
from service.domain import Status
from service.percentiles import percentile
from service.presenters import iso
from service.reports.model import Column, Report, Section, sort_key
from service.reports.params import ReportQuery

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
SECONDS = 3
RATIO = 4
_CANCELLED = frozenset({Status.DELETING.value, Status.DELETED.value})

SUMMARY_COLUMNS = (
    Column("requested"),
    Column("succeeded"),
    Column("failed"),
    Column("cancelled"),
    Column("in_progress"),
    Column("success_rate", RATIO),
    Column("fallbacks"),
    Column("fallback_rate", RATIO),
    *(Column(f"to_running_{label}_s", SECONDS) for label, _ in QUANTILES),
    *(Column(f"to_ready_{label}_s", SECONDS) for label, _ in QUANTILES),
)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class _Group:
    requested: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    placed: int = 0
    fallbacks: int = 0
    to_running: list[float] = field(default_factory=list)
    to_ready: list[float] = field(default_factory=list)

    def add(self, status: str, failed: Any, fallback: Any, to_running: Any, to_ready: Any) -> None:
        self.requested += 1
        if to_running is not None:
            self.succeeded += 1
            self.to_running.append(float(to_running))
        elif failed:
            self.failed += 1
        elif status in _CANCELLED:
            self.cancelled += 1
        if to_ready is not None:
            self.to_ready.append(float(to_ready))
        if fallback is not None:
            self.placed += 1
            self.fallbacks += bool(fallback)

    def values(self) -> tuple[Any, ...]:
        return (
            self.requested,
            self.succeeded,
            self.failed,
            self.cancelled,
            self.requested - self.succeeded - self.failed - self.cancelled,
            _ratio(self.succeeded, self.succeeded + self.failed),
            self.fallbacks,
            _ratio(self.fallbacks, self.placed),
            *_quantiles(self.to_running),
            *_quantiles(self.to_ready),
        )


def _quantiles(values: list[float]) -> list[float | None]:
    values.sort()
    return [percentile(values, q) for _, q in QUANTILES]


async def provisioning_report(database: Database, query: ReportQuery, *, now: datetime) -> Report:
    window = query.window
    assert window is not None
    dims = query.group_by
    width = len(dims)
    async with sql.report_connection(database) as conn:
        per_instance = await sql.provisioning_instances(conn, dims, window)
        capacity = await sql.capacity_errors(conn, window)
        failures = await sql.failure_reasons(conn, window)

    groups: dict[tuple[Any, ...], _Group] = defaultdict(_Group)
    for row in per_instance:
        groups[tuple(row[:width])].add(*row[width:])
    summary = [(*key, *group.values()) for key, group in groups.items()]
    sections = (
        Section(
            "summary",
            (*(Column(name) for name in dims), *SUMMARY_COLUMNS),
            tuple(sorted(summary, key=lambda r: sort_key(r, width))),
        ),
        Section(
            "capacity_errors",
            (Column("region"), Column("product_id"), Column("product_name"), Column("errors")),
            tuple(sorted(((*r[:3], int(r[3])) for r in capacity), key=lambda r: sort_key(r, 3))),
        ),
        Section(
            "failure_reasons",
            (Column("reason"), Column("failures")),
            tuple(sorted(((r[0], int(r[1])) for r in failures), key=lambda r: sort_key(r, 1))),
        ),
    )
    parameters = {"since": iso(window.since), "until": iso(window.until), "groupBy": list(dims)}
    return Report("provisioning", now, parameters, sections)
