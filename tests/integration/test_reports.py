"""Every report on SQLite and PostgreSQL against values computed by hand from a small,
fixed history (instances, events, webhooks, tallies and notifications inserted directly
with fixed timestamps); and usage against its one-instance-at-a-time definition on random
histories."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from service.db.engine import Database
from service.db.models import (
    instance_events,
    instances,
)
from service.domain import Status
from service.reports.intervals import billing_intervals, clip, split_by_day
from service.reports.model import Report
from service.reports.params import parse_query
from service.reports.run import run_report
from tests.support.report_data import A100, HK, RTX, SGP, event_rows, instance_row, seed

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
WINDOW = {"since": "2026-03-01T00:00:00Z", "until": "2026-03-03T00:00:00Z"}


async def report(database: Database, name: str, **options: str) -> Report:
    return await run_report(database, parse_query(name, now=NOW, **options), now=NOW)


def rounded(rows: tuple[tuple[Any, ...], ...], digits: int = 6) -> list[tuple[Any, ...]]:
    return [tuple(round(v, digits) if isinstance(v, float) else v for v in row) for row in rows]


@pytest.fixture
async def history(database: Database) -> Database:
    await seed(database)
    return database


# -- fleet -------------------------------------------------------------------------------


async def test_fleet_now_counts_the_status_column_per_group(history: Database) -> None:
    fleet = (await report(history, "fleet")).section("fleet")
    assert [c.name for c in fleet.columns] == [
        "status",
        "region",
        "product",
        "billing_mode",
        "instances",
    ]
    assert list(fleet.rows) == [
        ("deleted", SGP, A100, "onDemand", 1),
        ("failed", SGP, RTX, "onDemand", 1),
        ("failed", None, RTX, "onDemand", 1),
        ("ready", HK, A100, "spot", 1),
        ("stopped", SGP, RTX, "onDemand", 1),
    ]


async def test_fleet_at_a_past_moment_replays_the_history(history: Database) -> None:
    at_1235 = await report(history, "fleet", at="2026-03-01T12:35:00Z", group_by="status")
    assert list(at_1235.section("fleet").rows) == [("ready", 1), ("running", 1)]
    at_noon = await report(history, "fleet", at="2026-03-01T12:00:00Z", group_by="status")
    assert list(at_noon.section("fleet").rows) == [("pending", 1), ("ready", 1)]
    evening = await report(history, "fleet", at="2026-03-01T23:00:00Z", group_by="status,region")
    assert list(evening.section("fleet").rows) == [
        ("deleted", SGP, 1),
        ("failed", None, 1),
        ("ready", SGP, 1),
        ("ready", HK, 1),
    ]
    assert at_noon.parameters["at"] == "2026-03-01T12:00:00Z"


async def test_fleet_at_now_agrees_with_the_status_column(history: Database) -> None:
    replayed = await report(history, "fleet", at=NOW.isoformat())
    current = await report(history, "fleet")
    assert replayed.section("fleet").rows == current.section("fleet").rows


# -- usage -------------------------------------------------------------------------------


async def test_usage_splits_billing_time_by_day_and_prices_it(history: Database) -> None:
    usage = (await report(history, "usage", **WINDOW)).section("usage")
    assert [c.name for c in usage.columns] == [
        "day",
        "product",
        "region",
        "billing_mode",
        "gpu_hours",
        "cost_usd",
    ]
    assert rounded(usage.rows) == [
        ("2026-03-01", A100, HK, "spot", 11.5, 13.8),  # B 12:30 → 24:00 x $1.20
        ("2026-03-01", RTX, SGP, "onDemand", 27.833333, 13.916667),  # A 13h55m x 2 GPUs
        ("2026-03-02", A100, HK, "spot", 24.0, 28.8),  # B all day
        ("2026-03-02", RTX, SGP, "onDemand", 4.333333, 2.166667),  # A 2h x 2 + E 20 min
    ]


async def test_usage_totals_and_open_stretches_end_now(history: Database) -> None:
    totals = await report(history, "usage", group_by="", **WINDOW)
    assert rounded(totals.section("usage").rows) == [(67.666667, 58.683333)]
    # The window reaches past NOW (03-03 12:00): B's open stretch stops there.
    later = await report(
        history, "usage", since="2026-03-02", until="2026-03-05", group_by="day,product"
    )
    assert rounded(later.section("usage").rows) == [
        ("2026-03-02", A100, 24.0, 28.8),
        ("2026-03-02", RTX, 4.333333, 2.166667),
        ("2026-03-03", A100, 12.0, 14.4),
    ]


async def test_usage_clips_to_a_window_inside_a_stretch(history: Database) -> None:
    inside = await report(
        history,
        "usage",
        since="2026-03-01T18:00:00Z",
        until="2026-03-01T19:30:00Z",
        group_by="billing_mode",
    )
    # A (2 GPUs) and B (1 GPU) both billed through those 90 minutes.
    assert rounded(inside.section("usage").rows) == [("onDemand", 3.0, 1.5), ("spot", 1.5, 1.8)]


# -- provisioning ------------------------------------------------------------------------


async def test_provisioning_outcomes_rates_and_percentiles(history: Database) -> None:
    result = await report(history, "provisioning", **WINDOW)
    summary = result.section("summary")
    assert [c.name for c in summary.columns][:8] == [
        "requested",
        "succeeded",
        "failed",
        "cancelled",
        "in_progress",
        "success_rate",
        "fallbacks",
        "fallback_rate",
    ]
    # to_running [300, 660, 1800]; to_ready [600, 2400]; fallback: A of A, B, E placed.
    assert rounded(summary.rows, 4) == [
        (5, 3, 1, 1, 0, 0.75, 1, 0.3333, 660.0, 1572.0, 1777.2, 1500.0, 2220.0, 2382.0)
    ]
    assert list(result.section("capacity_errors").rows) == [
        (SGP, "p4090", RTX, 1),
        (HK, "p4090", RTX, 2),
    ]
    assert list(result.section("failure_reasons").rows) == [
        ("no_capacity", 1),
        ("startup_timeout", 1),
    ]


async def test_provisioning_grouped_by_product(history: Database) -> None:
    result = await report(history, "provisioning", group_by="product", **WINDOW)
    rows = rounded(result.section("summary").rows, 4)
    assert rows == [
        (A100, 2, 1, 0, 1, 0, 1.0, 0, 0.0, 1800.0, 1800.0, 1800.0, 2400.0, 2400.0, 2400.0),
        (RTX, 3, 2, 1, 0, 0, 0.6667, 1, 0.5, 480.0, 624.0, 656.4, 600.0, 600.0, 600.0),
    ]


async def test_provisioning_window_counts_only_what_happened_in_it(history: Database) -> None:
    result = await report(history, "provisioning", since="2026-03-02", until="2026-03-03")
    assert rounded(result.section("summary").rows, 4) == [
        (1, 1, 0, 0, 0, 1.0, 0, 0.0, 660.0, 660.0, 660.0, None, None, None)
    ]
    assert list(result.section("capacity_errors").rows) == []
    assert list(result.section("failure_reasons").rows) == [("startup_timeout", 1)]


# -- reliability -------------------------------------------------------------------------


async def test_reliability_webhooks_changes_and_notifications(history: Database) -> None:
    result = await report(history, "reliability", **WINDOW)
    assert list(result.section("webhooks").rows) == [(3, 1, 2, 4)]
    assert list(result.section("webhook_outcomes").rows) == [
        ("applied", 1),
        ("stale", 1),
        ("unprocessed", 1),
    ]
    assert list(result.section("webhook_rejections").rows) == [
        ("invalid_signature", 3),
        ("malformed_request", 1),
    ]
    assert rounded(result.section("state_changes").rows, 4) == [
        ("api", 7, 0.35),
        ("webhook", 3, 0.15),
        ("reconciler", 5, 0.25),
        ("provisioner", 5, 0.25),
        ("policy", 0, 0.0),
    ]
    notifications = result.section("notifications")
    assert [c.name for c in notifications.columns] == [
        "created",
        "pending",
        "delivered",
        "failed",
        "cancelled",
        "no_target",
        "latency_p50_s",
        "latency_p99_s",
    ]
    # Delivered latencies [1, 2, 10] s: median 2, p99 2 + 0.98 x 8.
    assert rounded(notifications.rows, 3) == [(5, 1, 3, 1, 0, 0, 2.0, 9.84)]


async def test_reliability_of_an_empty_window(history: Database) -> None:
    result = await report(history, "reliability", since="2026-02-01", until="2026-02-02")
    assert list(result.section("webhooks").rows) == [(0, 0, 0, 0)]
    assert list(result.section("notifications").rows) == [(0, 0, 0, 0, 0, 0, None, None)]
    assert all(row[1] == 0 and row[2] is None for row in result.section("state_changes").rows)


# -- usage on random histories -----------------------------------------------------------


async def test_usage_equals_its_definition_on_random_histories(database: Database) -> None:
    rng = random.Random(11)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    now = start + timedelta(days=6, hours=7)
    moves = {
        "pending": ["provisioning", "failed"],
        "provisioning": ["running", "starting", "failed", "deleting"],
        "starting": ["running", "stopped", "failed"],
        "running": ["ready", "stopping", "interrupted", "failed", "running"],
        "ready": ["running", "stopping", "deleting", "ready"],
        "stopping": ["stopped"],
        "stopped": ["starting", "deleting"],
        "interrupted": ["starting", "deleting"],
        "deleting": ["deleted"],
    }
    expected: dict[tuple[str, str], list[float]] = {}
    async with database.transaction() as conn:
        for n in range(40):
            instance_id = f"inst_{n:03d}"
            product = rng.choice([RTX, A100])
            gpus, price = rng.choice([1, 2, 8]), rng.choice([0.35, 1.6])
            at = start + timedelta(minutes=rng.uniform(0, 5 * 1440))
            status, steps = "pending", [(at, "api", "pending", None, {})]
            while status in moves and len(steps) < 12:
                at += timedelta(minutes=rng.choice([0.5, 7, 90, 600, 2000]) * rng.random())
                if at >= now:
                    break
                nxt = rng.choice(moves[status])
                steps.append((at, "reconciler", nxt, None, {}))
                status = nxt
                if n % 5 == 0 and status in ("running", "ready"):
                    break  # some are still billing: open stretches
            await conn.execute(
                instances.insert(),
                [
                    instance_row(
                        instance_id,
                        created_at=steps[0][0],
                        status=status,
                        product_name=product,
                        gpu_num=gpus,
                        price_per_hour=Decimal(str(price)),
                        event_seq=len(steps),
                    )
                ],
            )
            await conn.execute(instance_events.insert(), event_rows(instance_id, steps))
            history = [(step[0], Status(step[2])) for step in steps]
            for interval in billing_intervals(history, now=now):
                window = clip(interval, start + timedelta(days=1), start + timedelta(days=7))
                for day, seconds in split_by_day(window) if window else []:
                    totals = expected.setdefault((day.isoformat(), product), [0.0, 0.0])
                    totals[0] += seconds * gpus / 3600
                    totals[1] += seconds * gpus * price / 3600
    query = parse_query(
        "usage", now=now, since="2026-03-02", until="2026-03-08", group_by="day,product"
    )
    result = await run_report(database, query, now=now)
    got = {(row[0], row[1]): [row[2], row[3]] for row in result.section("usage").rows}
    assert got.keys() == {key for key, value in expected.items() if value[0] > 1e-9}
    # SQLite's julianday() reads times to the millisecond: allow 36 ms of GPU time.
    for key, (hours, cost) in got.items():
        assert hours == pytest.approx(expected[key][0], abs=1e-5)
        assert cost == pytest.approx(expected[key][1], abs=1e-5)
    assert date(2026, 3, 7).isoformat() in {day for day, _ in got}  # open stretches reach now
