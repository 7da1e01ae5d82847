"""The pure pieces of the reports: percentiles, usage intervals (clip, day split, the
edge spread the SQL path relies on), request parsing and the output formats."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest

from service.domain import Status
from service.errors import ValidationFailedError
from service.percentiles import neighbour_ranks, percentile
from service.reports.intervals import (
    DAY_SECONDS,
    billing_intervals,
    clip,
    split_by_day,
    spread_over_days,
)
from service.reports.model import Column, Report, Section
from service.reports.params import parse_query
from service.reports.render import render

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def at(day: int, hour: float = 0) -> datetime:
    return datetime(2026, 3, day, tzinfo=UTC) + timedelta(hours=hour)


# -- percentiles -------------------------------------------------------------------------


def test_percentile_interpolates_linearly_between_closest_ranks() -> None:
    values = [300.0, 660.0, 1800.0]
    assert percentile(values, 0.5) == 660.0
    assert percentile(values, 0.9) == pytest.approx(1572.0)
    assert percentile(values, 0.99) == pytest.approx(1777.2)
    assert percentile(values, 0.0) == 300.0 and percentile(values, 1.0) == 1800.0


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_neighbour_ranks_are_one_based_and_refuse_nonsense() -> None:
    assert neighbour_ranks(3, 0.5) == (2, 2)
    assert neighbour_ranks(4, 0.5) == (2, 3)
    with pytest.raises(ValueError):
        neighbour_ranks(0, 0.5)
    with pytest.raises(ValueError):
        neighbour_ranks(3, 1.5)


# -- intervals ---------------------------------------------------------------------------


def test_billing_intervals_last_until_the_next_event_and_the_open_one_until_now() -> None:
    history = [
        (at(1, 1), Status.PENDING),
        (at(1, 2), Status.RUNNING),
        (at(1, 3), Status.READY),
        (at(1, 5), Status.STOPPED),
        (at(2, 1), Status.RUNNING),
    ]
    assert billing_intervals(history, now=at(2, 4)) == [
        (at(1, 2), at(1, 3)),
        (at(1, 3), at(1, 5)),
        (at(2, 1), at(2, 4)),
    ]


def test_clip_keeps_the_overlap_or_nothing() -> None:
    assert clip((at(1, 1), at(1, 5)), at(1, 2), at(1, 3)) == (at(1, 2), at(1, 3))
    assert clip((at(1, 1), at(1, 5)), at(1, 0), at(2)) == (at(1, 1), at(1, 5))
    assert clip((at(1, 1), at(1, 2)), at(1, 2), at(1, 3)) is None


def test_split_by_day_cuts_at_utc_midnights() -> None:
    assert split_by_day((at(1, 22), at(4, 2))) == [
        (date(2026, 3, 1), 7200.0),
        (date(2026, 3, 2), 86400.0),
        (date(2026, 3, 3), 86400.0),
        (date(2026, 3, 4), 7200.0),
    ]
    assert split_by_day((at(1, 22), at(2))) == [(date(2026, 3, 1), 7200.0)]


def _edges(intervals: list[tuple[float, float]]) -> dict[int, tuple[float, float]]:
    edges: dict[int, tuple[float, float]] = {}
    for start, end in intervals:
        for moment, sign in ((start, -1.0), (end, 1.0)):
            day = int(moment // DAY_SECONDS)
            weight, offset = edges.get(day, (0.0, 0.0))
            edges[day] = (weight + sign, offset + sign * (moment - day * DAY_SECONDS))
    return edges


def test_spread_over_days_matches_splitting_each_interval() -> None:
    rng = random.Random(5)
    first_day, last_day = 20_000, 20_010
    intervals = []
    for _ in range(200):
        start = rng.uniform(first_day, last_day + 0.99) * DAY_SECONDS
        end = min(
            start + rng.choice([60, 3600, 86400, 5 * 86400]) * rng.random(),
            (last_day + 1) * DAY_SECONDS - 1,
        )
        if end > start:
            intervals.append((start, end))
    expected = dict.fromkeys(range(first_day, last_day + 1), 0.0)
    for start, end in intervals:
        begin = datetime.fromtimestamp(start, UTC)
        for day, seconds in split_by_day((begin, datetime.fromtimestamp(end, UTC))):
            expected[(day - date(1970, 1, 1)).days] += seconds
    spread = spread_over_days(_edges(intervals), first_day, last_day)
    assert spread == pytest.approx(expected, abs=1e-3)


# -- parameters --------------------------------------------------------------------------


def test_window_defaults_to_the_seven_days_before_until() -> None:
    query = parse_query("usage", now=NOW)
    assert query.window is not None
    assert (query.window.since, query.window.until) == (NOW - timedelta(days=7), NOW)
    assert query.group_by == ("day", "product", "region", "billing_mode")


def test_times_are_iso_naive_as_utc_or_ages() -> None:
    query = parse_query("usage", now=NOW, since="2026-03-01", until="2026-03-02T06:00:00+02:00")
    assert query.window is not None
    assert query.window.since == datetime(2026, 3, 1, tzinfo=UTC)
    assert query.window.until == datetime(2026, 3, 2, 4, tzinfo=UTC)
    aged = parse_query("reliability", now=NOW, since="36h", until="30m")
    assert aged.window is not None
    assert aged.window.since == NOW - timedelta(hours=36)
    assert aged.window.until == NOW - timedelta(minutes=30)


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("usage", {"since": "yesterday"}, "since"),
        ("usage", {"until": "2026-13-01"}, "until"),
        ("usage", {"since": "2026-03-05", "until": "2026-03-01"}, "since"),
        ("usage", {"since": "1969-12-31"}, "since"),
        ("usage", {"since": "999999w"}, "since"),
        ("usage", {"since": "2000-01-01"}, "since"),
        ("usage", {"group_by": "day,colour"}, "group_by"),
        ("usage", {"at": "2026-03-01"}, "at"),
        ("fleet", {"since": "2026-03-01"}, "since"),
        ("reliability", {"group_by": "region"}, "group_by"),
        ("costs", {}, "name"),
    ],
)
def test_bad_parameters_name_the_field(name: str, options: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        parse_query(name, now=NOW, **options)
    assert [item["field"] for item in caught.value.fields] == [field]


def test_group_by_empty_means_totals_and_repeats_are_dropped() -> None:
    assert parse_query("usage", now=NOW, group_by="").group_by == ()
    assert parse_query("fleet", now=NOW, group_by="region, region,status").group_by == (
        "region",
        "status",
    )


# -- rendering ---------------------------------------------------------------------------


def _report() -> Report:
    rows = (("RTX 4090", 1.23456789, 3), (None, 2.0, None))
    section = Section("usage", (Column("product"), Column("gpu_hours", 4), Column("n")), rows)
    other = Section("other", (Column("reason"),), ())
    return Report("usage", NOW, {"groupBy": ["product"]}, (section, other))


def test_csv_is_the_first_section_with_fixed_decimals_and_empty_missing_values() -> None:
    text = render(_report(), "csv")
    assert list(csv.reader(io.StringIO(text))) == [
        ["product", "gpu_hours", "n"],
        ["RTX 4090", "1.2346", "3"],
        ["", "2.0000", ""],
    ]
    assert render(_report(), "csv", section="other") == "reason\n"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_text_that_starts_like_a_formula_is_neutralised_and_numbers_are_not(
    start: str,
) -> None:
    text = f"{start}HYPERLINK(\"http://evil.example\")"
    rows = ((text, -1.5, -3), ("plain", 2.0, 4))
    section = Section("s", (Column("name"), Column("cost", 2), Column("n")), rows)
    lines = list(csv.reader(io.StringIO(render(Report("x", NOW, {}, (section,)), "csv"))))
    assert lines[1] == ["'" + text, "-1.50", "-3"]
    assert lines[2] == ["plain", "2.00", "4"]


def test_json_holds_every_section_as_records() -> None:
    document = json.loads(render(_report(), "json"))
    assert document["report"] == "usage"
    assert document["generatedAt"] == "2026-03-10T12:00:00Z"
    assert document["sections"]["usage"]["columns"] == ["product", "gpu_hours", "n"]
    assert document["sections"]["usage"]["rows"][0] == {
        "product": "RTX 4090",
        "gpu_hours": 1.2346,
        "n": 3,
    }
    assert document["sections"]["other"]["rows"] == []


def test_table_aligns_columns_and_marks_empty_sections() -> None:
    text = render(_report(), "table")
    lines = text.splitlines()
    assert lines[0] == "== usage =="
    assert lines[1].split() == ["product", "gpu_hours", "n"]
    assert lines[3].split() == ["RTX", "4090", "1.2346", "3"]
    assert "(no rows)" in text


def test_unknown_format_or_section_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailedError):
        render(_report(), "xml")
    with pytest.raises(ValidationFailedError) as caught:
        render(_report(), "csv", section="nope")
    assert caught.value.fields[0]["field"] == "section"
