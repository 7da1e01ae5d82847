"""The dashboard's pure pieces: bar-chart geometry and the age shown next to times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.dashboard.charts import HEIGHT, MARGIN_BOTTOM, bar_chart
from service.dashboard.pages import age, ready_histogram
from service.dashboard.signin import safe_next

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_bars_scale_to_the_largest_value_and_sit_on_the_baseline() -> None:
    chart = bar_chart("t", [("a", 1.0), ("b", 4.0), ("c", 0.0)], unit="$")
    a, b, c = chart.bars
    assert b.height == 4 * a.height
    assert c.height == 0
    for bar in chart.bars:
        assert round(bar.y + bar.height, 2) == HEIGHT - MARGIN_BOTTOM
    assert a.x < b.x < c.x
    assert [tick.text for tick in chart.ticks] == ["$0", "$2", "$4"]


def test_an_empty_chart_has_no_bars() -> None:
    chart = bar_chart("t", [])
    assert chart.bars == () and len(chart.ticks) == 3


def test_age_reads_api_times_and_datetimes() -> None:
    assert age("2026-03-01T11:59:30Z", NOW) == "30s"
    assert age(NOW - timedelta(minutes=5), NOW) == "5m"
    assert age(NOW - timedelta(hours=2, minutes=3), NOW) == "2h 3m"
    assert age(NOW - timedelta(days=3, hours=1), NOW) == "3d 1h"
    assert age(None, NOW) == "—"
    assert age(NOW + timedelta(seconds=5), NOW) == "0s", "clock skew is not negative"


def test_the_page_after_sign_in_is_always_on_the_dashboard() -> None:
    assert safe_next("/dashboard/instances?status=ready") == "/dashboard/instances?status=ready"
    for bad in (
        None,
        "",
        "https://evil.example",
        "//evil.example",
        "/api/x",
        "/dashboard\\x",
        "/dashboard/\nx",
    ):
        assert safe_next(bad) == "/dashboard/"


def test_time_to_ready_falls_into_half_open_buckets() -> None:
    histogram = dict(ready_histogram([0, 59.9, 60, 299, 300, 1799, 1800, 86400]))
    assert histogram == {
        "<1m": 2,
        "1-2m": 1,
        "2-5m": 1,
        "5-10m": 1,
        "10-15m": 0,
        "15-30m": 1,
        ">30m": 2,
    }
