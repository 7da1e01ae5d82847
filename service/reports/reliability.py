"""`reliability`: over a window, what arrived and what went out.

- webhooks: stored (by applier outcome), duplicates, rejected (by reason);
- state changes by source: `webhook` = first seen through a provider webhook,
  `reconciler` = found (repaired) by polling the provider, and the others;
- notifications created in the window by delivery status, and the delivery latency
  (delivered_at - created_at) of the delivered ones, median and p99.
Duplicates and rejections are counted per minute, so their window is to the minute.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.db import reports as sql
from service.db.engine import Database
from service.db.models import OUTBOX_STATUSES
from service.db.webhook_tallies import DUPLICATE
from service.domain import EventSource
from service.presenters import iso
from service.reports.model import Column, Report, Section, sort_key
from service.reports.params import ReportQuery

SECONDS = 3
RATIO = 4
UNPROCESSED = "unprocessed"


def _counts(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {str(key): int(count) for key, count in rows}


async def reliability_report(database: Database, query: ReportQuery, *, now: datetime) -> Report:
    window = query.window
    assert window is not None
    async with sql.report_connection(database) as conn:
        outcomes = await sql.webhook_outcomes(conn, window)
        tallies = _counts(await sql.webhook_tallies_by_outcome(conn, window))
        changes = _counts(await sql.state_changes_by_source(conn, window))
        statuses, (p50, p99) = await sql.notification_summary(conn, window, (0.5, 0.99))

    by_outcome = {(outcome or UNPROCESSED): int(count) for outcome, count in outcomes}
    received = sum(by_outcome.values())
    duplicates = tallies.pop(DUPLICATE, 0)
    rejections = tallies
    total_changes = sum(changes.values())
    sources = [source.value for source in EventSource]
    sources += sorted(set(changes) - set(sources))  # nothing else today; never hide one
    sections = (
        Section(
            "webhooks",
            tuple(Column(name) for name in ("received", "unprocessed", "duplicates", "rejected")),
            ((received, by_outcome.get(UNPROCESSED, 0), duplicates, sum(rejections.values())),),
        ),
        Section(
            "webhook_outcomes",
            (Column("outcome"), Column("webhooks")),
            tuple(sorted(by_outcome.items(), key=lambda r: sort_key(r, 1))),
        ),
        Section(
            "webhook_rejections",
            (Column("reason"), Column("requests")),
            tuple(sorted(rejections.items(), key=lambda r: sort_key(r, 1))),
        ),
        Section(
            "state_changes",
            (Column("source"), Column("changes"), Column("share", RATIO)),
            tuple(
                (
                    source,
                    changes.get(source, 0),
                    changes.get(source, 0) / total_changes if total_changes else None,
                )
                for source in sources
            ),
        ),
        Section(
            "notifications",
            (
                Column("created"),
                *(Column(status) for status in OUTBOX_STATUSES),
                Column("latency_p50_s", SECONDS),
                Column("latency_p99_s", SECONDS),
            ),
            (
                (
                    sum(statuses.values()),
                    *(statuses.get(status, 0) for status in OUTBOX_STATUSES),
                    p50,
                    p99,
                ),
            ),
        ),
    )
    parameters: dict[str, Any] = {
        "since": iso(window.since),
        "until": iso(window.until),
        "groupBy": [],
    }
    if window.team is not None:
        # Inbound webhooks are Novita's, for every team alike: a team's report leaves them out.
        kept = tuple(s for s in sections if not s.name.startswith("webhook"))
        return Report("reliability", now, parameters, kept)
    return Report("reliability", now, parameters, sections)
