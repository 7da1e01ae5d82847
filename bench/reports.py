"""Report speed over a large history: every report, 3 runs each, median printed.

    .venv/bin/python bench/reports.py [--instances 112000] [--runs 3]   # >= 1,000,000 events
        [--sqlite /tmp/novita-reports-bench.db] [--postgres URL] [--reuse]

Generates a realistic history (instances through their lifecycles, about 10 events each,
one outbox row per event, the provider webhooks behind webhook-sourced events, webhook
tallies) with bulk inserts into a SQLite file and, when `--postgres` or TEST_POSTGRES_URL
is given, into a scratch PostgreSQL database (created, and dropped at the end unless
`--keep`). `--reuse` skips generation when the SQLite file already holds data. Each report
runs over the whole history (the widest window), through `service.reports.run_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.db.models import (
    inbound_webhooks,
    instance_events,
    instances,
    outbox,
    webhook_tallies,
)
from service.reports.params import parse_query
from service.reports.run import run_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 90
NOW = T0 + timedelta(days=SPAN_DAYS + 1)
REGIONS = ["AS-SGP-02", "CN-HK-01", "AS-IN-01", "US-CA-06", "EU-DE-01"]
PRODUCTS = [
    ("4090.16c62g", "RTX 4090 24GB", Decimal("0.35")),
    ("a100.24c120g", "A100 80GB", Decimal("1.60")),
    ("h100.26c250g", "H100 80GB", Decimal("2.89")),
    ("l40s.16c60g", "L40S 48GB", Decimal("0.86")),
]
MODES = ["onDemand", "onDemand", "onDemand", "spot"]
BATCH = 20_000
QUERIES: dict[str, dict[str, str]] = {
    "fleet": {},
    "fleet --at": {"at": (T0 + timedelta(days=45)).isoformat()},
    "usage": {"since": T0.isoformat(), "until": NOW.isoformat()},
    "provisioning": {"since": T0.isoformat(), "until": NOW.isoformat()},
    "reliability": {"since": T0.isoformat(), "until": NOW.isoformat()},
}


class History:
    """One instance's rows, built by walking it through a lifecycle."""

    def __init__(self, rng: random.Random, n: int) -> None:
        self.rng = rng
        self.id = f"inst_{uuid.uuid4().hex}"
        self.n = n
        self.product = rng.choice(PRODUCTS)
        self.preferred = rng.choice(REGIONS)
        self.region: str | None = None
        self.created = T0 + timedelta(seconds=rng.uniform(0, SPAN_DAYS * 86400))
        self.at = self.created
        self.status = "pending"
        self.events: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []

    def step(self, to: str, source: str, minutes: float, **extra: Any) -> None:
        self.at += timedelta(minutes=minutes)
        seq = len(self.events) + 1
        self.events.append(
            {
                "instance_id": self.id,
                "seq": seq,
                "at": self.at,
                "source": source,
                "kind": extra.pop("kind", "status_changed"),
                "from_status": self.status if seq > 1 else None,
                "to_status": to,
                "provider_status": None,
                "reason": extra.pop("reason", None),
                "detail": extra.pop("detail", {}),
            }
        )
        self.status = to
        roll = self.rng.random()
        status = "delivered" if roll < 0.95 else "failed" if roll < 0.98 else "pending"
        latency = self.rng.expovariate(2.0) if self.rng.random() < 0.97 else 300 + roll * 600
        self.outbox.append(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "instance_id": self.id,
                "event_seq": seq,
                "type": f"instance.{to}",
                "payload": {},
                "target_url": "https://hooks.example.com/x",
                "status": status,
                "attempts": 1,
                "created_at": self.at,
                "updated_at": self.at,
                "delivered_at": self.at + timedelta(seconds=latency)
                if status == "delivered"
                else None,
            }
        )
        if source == "webhook":
            self.webhooks.append(
                {
                    "webhook_id": f"msg_{uuid.uuid4().hex}",
                    "received_at": self.at,
                    "event_type": "instance.status_changed",
                    "provider_instance_id": self.id[-16:],
                    "payload": {},
                    "processed_at": self.at,
                    "outcome": "applied" if self.rng.random() < 0.9 else "stale",
                }
            )

    def live(self) -> None:
        rng = self.rng
        self.step("pending", "api", 0, kind="created")
        if rng.random() < 0.06:
            attempts = [self._attempt(region) for region in REGIONS]
            self.step(
                "failed", "provisioner", 0.1, reason="no_capacity", detail={"attempts": attempts}
            )
            return
        tried = [self._attempt(r) for r in REGIONS if r != self.preferred][
            : rng.choice([0] * 8 + [1, 2])
        ]
        self.region = self.preferred if not tried else rng.choice(REGIONS)
        self.step(
            "provisioning",
            "provisioner",
            0.2,
            kind="submitted",
            detail={"region": self.region, "capacityAttempts": tried},
        )
        if rng.random() < 0.04:
            self.step("failed", "reconciler", rng.uniform(5, 30), reason="image_pull_failed")
            return
        self.step("running", rng.choice(["webhook", "reconciler"]), rng.uniform(0.5, 4))
        self.step("ready", "reconciler", rng.uniform(0.2, 3))
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            self.step("stopping", "api", rng.uniform(30, 3000))
            self.step("stopped", rng.choice(["webhook", "reconciler"]), rng.uniform(0.2, 2))
            self.step("starting", "api", rng.uniform(10, 2000))
            self.step("running", rng.choice(["webhook", "reconciler"]), rng.uniform(0.5, 3))
            self.step("ready", "reconciler", rng.uniform(0.2, 2))
        if rng.random() < 0.15:
            return  # still billing: an open interval
        if rng.random() < 0.1:
            self.step("interrupted", "webhook", rng.uniform(60, 3000))
        self.step("deleting", "api", rng.uniform(30, 5000))
        self.step("deleted", rng.choice(["webhook", "reconciler"]), rng.uniform(0.2, 2))

    def _attempt(self, region: str) -> dict[str, str]:
        return {
            "region": region,
            "clusterId": region.lower(),
            "productId": self.product[0],
            "productName": self.product[1],
            "code": "INSUFFICIENT_RESOURCE",
            "reason": "no capacity",
            "message": "not enough GPUs",
        }

    def instance_row(self) -> dict[str, Any]:
        product_id, product_name, price = self.product
        return {
            "id": self.id,
            "name": f"bench-{self.n}",
            "status": self.status,
            "novita_instance_id": self.id[-16:] if self.region else None,
            "product_id": product_id,
            "product_name": product_name,
            "region": self.region,
            "gpu_num": self.rng.choice([1, 1, 1, 2, 4, 8]),
            "billing_mode": self.rng.choice(MODES),
            "price_per_hour": price if self.region else None,
            "preferred_region": self.preferred,
            "regions": [],
            "ports": [],
            "envs": [],
            "labels": {},
            "port_mappings": [],
            "created_at": self.created,
            "updated_at": self.at,
            "event_seq": len(self.events),
            "version": len(self.events),
            "status_reason": self.events[-1]["reason"] if self.status == "failed" else None,
        }


async def generate(database: Database, count: int, seed: int = 7) -> int:
    await upgrade_to_head(database.engine)
    rng = random.Random(seed)
    total_events = 0
    rows: dict[str, list[dict[str, Any]]] = {"i": [], "e": [], "o": [], "w": []}

    async def flush() -> None:
        async with database.transaction() as conn:
            for key, table in (
                ("i", instances),
                ("e", instance_events),
                ("o", outbox),
                ("w", inbound_webhooks),
            ):
                if rows[key]:
                    await conn.execute(table.insert(), rows[key])
                rows[key].clear()

    for n in range(count):
        history = History(rng, n)
        history.live()
        rows["i"].append(history.instance_row())
        rows["e"] += history.events
        rows["o"] += history.outbox
        rows["w"] += history.webhooks
        total_events += len(history.events)
        if len(rows["e"]) >= BATCH:
            await flush()
    await flush()
    tallies = [
        {"minute": T0 + timedelta(minutes=m), "outcome": outcome, "count": rng.randint(1, 20)}
        for m in range(0, SPAN_DAYS * 1440, 97)
        for outcome in ("duplicate", "invalid_signature", "malformed_request")
    ]
    async with database.transaction() as conn:
        await conn.execute(webhook_tallies.insert(), tallies)
    if database.dialect == "postgresql":
        # What autovacuum would have done to a settled database: statistics, and the
        # visibility map that lets the covering indexes answer without the table.
        async with database.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE"))
    return total_events


async def measure(database: Database, runs: int) -> dict[str, float]:
    medians = {}
    for label, options in QUERIES.items():
        query = parse_query(label.split()[0], now=NOW, **options)
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            await run_report(database, query, now=NOW)
            timings.append(time.perf_counter() - started)
        medians[label] = statistics.median(timings)
    return medians


async def event_count(database: Database) -> int:
    try:
        async with database.read() as conn:
            return int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(instance_events))
                ).scalar_one()
            )
    except sa.exc.OperationalError:
        return 0


async def bench(url: str, args: argparse.Namespace, label: str) -> None:
    database = Database.from_url(url)
    try:
        events = await event_count(database) if args.reuse else 0
        if not events:
            started = time.perf_counter()
            events = await generate(database, args.instances)
            print(f"{label}: generated {events} events in {time.perf_counter() - started:.0f} s")
        for name, seconds in (await measure(database, args.runs)).items():
            print(f"{label:10} {name:14} median {seconds:.3f} s  ({events} events)")
    finally:
        await database.close()


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=112_000)  # about 1.01M events
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sqlite", default="/tmp/novita-reports-bench.db")
    parser.add_argument("--postgres", default=os.environ.get("TEST_POSTGRES_URL"))
    parser.add_argument("--reuse", action="store_true", help="keep existing generated data")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()

    if args.only != "postgresql":
        if not args.reuse:
            _remove_sqlite(args.sqlite)
        await bench(f"sqlite+aiosqlite:///{args.sqlite}", args, "sqlite")
    if args.only != "sqlite" and args.postgres:
        name = "novita_reports_bench"
        admin = await asyncpg.connect(_dsn(args.postgres))
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if exists and not args.reuse:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                exists = False
            if not exists:
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        try:
            await bench(url, args, "postgresql")
        finally:
            if not args.keep:
                admin = await asyncpg.connect(_dsn(args.postgres))
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
