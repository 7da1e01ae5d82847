"""Report requests: which report, over what window (or at what moment), grouped how.

The CLI and the REST API both pass their raw strings through `parse_query`, so both accept
and refuse exactly the same things; a refusal is a `ValidationFailedError` naming the field.
Times: ISO 8601 (`2026-03-01`, `2026-03-01T12:00:00Z`, naive means UTC) or an age such
as `30m`, `24h`, `7d`, `2w` (that long before now).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.auth.roles import MAX_TEAM, NO_TEAM, TEAM_RULE, valid_team
from service.db.reports import Window
from service.errors import ValidationFailedError


@dataclass(frozen=True, slots=True)
class ReportSpec:
    dimensions: tuple[str, ...]  # what --group-by accepts
    default_group_by: tuple[str, ...]
    windowed: bool  # since/until (else: a moment, `at`)


SPECS: dict[str, ReportSpec] = {
    "fleet": ReportSpec(
        ("status", "region", "product", "billing_mode"),
        ("status", "region", "product", "billing_mode"),
        windowed=False,
    ),
    "usage": ReportSpec(
        ("day", "product", "region", "billing_mode"),
        ("day", "product", "region", "billing_mode"),
        windowed=True,
    ),
    "provisioning": ReportSpec(("product", "region", "billing_mode"), (), windowed=True),
    "reliability": ReportSpec((), (), windowed=True),
}
REPORT_NAMES = tuple(SPECS)
DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=3660)
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)  # far from datetime's end: windows add to it
_AGE = re.compile(r"([0-9]{1,6})([smhdw])")  # used with fullmatch
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class ReportQuery:
    name: str
    group_by: tuple[str, ...]
    window: Window | None = None  # windowed reports
    at: datetime | None = None  # fleet: None means now (the current status column)
    team: str | None = None  # only this team's instances (None: every team)


def _invalid(field: str, message: str, value: object = None) -> ValidationFailedError:
    entry: dict[str, object] = {"field": field, "message": message}
    if value is not None:
        entry["value"] = value
    return ValidationFailedError([entry])


def parse_time(field: str, text: str, *, now: datetime) -> datetime:
    text = text.strip()
    try:
        age = _AGE.fullmatch(text)
        if age:
            moment = now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        else:
            moment = datetime.fromisoformat(text)
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(
            field, "expected an ISO 8601 time (e.g. 2026-03-01T12:00:00Z) or an age (24h, 7d)", text
        ) from None
    if not EARLIEST <= moment < LATEST:
        raise _invalid(field, "must be between 1970-01-02 and 9000-01-01", text)
    return moment


def parse_group_by(name: str, text: str | None) -> tuple[str, ...]:
    spec = SPECS[name]
    if text is None:
        return spec.default_group_by
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if chosen and not spec.dimensions:
        raise _invalid("group_by", f"the {name} report has no grouping", text)
    unknown = [part for part in chosen if part not in spec.dimensions]
    if unknown:
        raise _invalid("group_by", f"{name} groups by any of: {', '.join(spec.dimensions)}", text)
    return tuple(dict.fromkeys(chosen))


def parse_query(
    name: str,
    *,
    now: datetime,
    since: str | None = None,
    until: str | None = None,
    at: str | None = None,
    group_by: str | None = None,
    team: str | None = None,
) -> ReportQuery:
    if name not in SPECS:
        raise _invalid("name", f"reports are: {', '.join(REPORT_NAMES)}", name)
    spec = SPECS[name]
    if team is not None and team != NO_TEAM and not valid_team(team):
        raise _invalid("team", f"must be {TEAM_RULE}", team[:MAX_TEAM])
    grouping = parse_group_by(name, group_by)
    if not spec.windowed:
        for field, value in (("since", since), ("until", until)):
            if value is not None:
                raise _invalid(field, f"the {name} report counts at one moment: use `at`", value)
        moment = parse_time("at", at, now=now) if at is not None else None
        return ReportQuery(name, grouping, at=moment, team=team)
    if at is not None:
        raise _invalid("at", f"the {name} report covers a window: use `since` and `until`", at)
    end = parse_time("until", until, now=now) if until is not None else now
    start = parse_time("since", since, now=now) if since is not None else end - DEFAULT_WINDOW
    if start >= end:
        raise _invalid("since", "must be earlier than `until`", since)
    if end - start > MAX_WINDOW:
        raise _invalid("since", "the window may span at most 3660 days", since)
    return ReportQuery(name, grouping, window=Window(start, end, team), team=team)
