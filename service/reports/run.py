"""The report table: name → builder, and the one entry point the CLI and the API call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from service.db.engine import Database
from service.reports.fleet import fleet_report
from service.reports.model import Report
from service.reports.params import ReportQuery
from service.reports.provisioning import provisioning_report
from service.reports.reliability import reliability_report
from service.reports.usage import usage_report

Builder = Callable[..., Awaitable[Report]]

BUILDERS: dict[str, Builder] = {
    "fleet": fleet_report,
    "usage": usage_report,
    "provisioning": provisioning_report,
    "reliability": reliability_report,
}


async def run_report(database: Database, query: ReportQuery, *, now: datetime) -> Report:
    """Build the report `query` asks for; `now` ends open intervals and stamps the report."""
    report: Report = await BUILDERS[query.name](database, query, now=now)
    if query.team is not None:
        report.parameters["team"] = query.team
    return report
