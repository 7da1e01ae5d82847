"""Seeded instances for the benchmarks.

    python bench/seed_instances.py DATABASE_URL N [IDS_FILE]

Run as a command, it fills a database with N instances (and their first event) for read
benchmarks: the database is migrated first, rows are inserted in batches with Core
`executemany`; prints one instance id to stdout, and writes every id (one per line, in
insertion order) to IDS_FILE when given.

Imported, it gives the fleet benchmarks (webhook_ingest, reconciler_sweep, fleet_budget)
one way to seed: `running_instance` puts a `running` instance in a simulator's books,
`instance_row` is our row for it, `insert_rows` writes rows in batches.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.db.models import instance_events, instances
from service.simulator import SimInstance, Simulator
from service.simulator.machine import PortMapping, PortSpec

STATUSES = ["running", "ready", "stopped", "deleted", "failed", "provisioning"]
REGIONS = ["AS-SGP-02", "CN-HK-01", "AS-IN-01", "US-CA-06"]
BATCH = 5000
APP_PORT = 8888


def novita_id_of(n: int) -> str:
    """The Novita id of the n-th seeded instance (16 hex digits, as Novita's ids look)."""
    return f"{n:016x}"


def running_instance(
    sim: Simulator, n: int, name: str, *, created_at: float, app: bool = True
) -> SimInstance:
    """Put the n-th seeded instance in the simulator's books, `running` (an RTX 4090 in
    AS-SGP-02, on demand); with `app`, its port 8888 answers through the simulator's
    gateway (the simulator must be started for its gateway URL)."""
    novita_id = novita_id_of(n)
    inst = SimInstance(
        id=novita_id,
        seq=n + 1,
        name=name,
        kind="gpu",
        product_id="4090.16c62g",
        product_name="RTX 4090 24GB",
        cluster_id="as-sgp-2",
        cluster_name="AS-SGP-02",
        gpu_num=1,
        cpu_num=16,
        memory=62,
        rootfs_size=60,
        image_url="pytorch/pytorch:latest",
        billing_mode="onDemand",
        spot=False,
        price=35000,
        created_at=created_at,
        status="running",
    )
    if app:
        inst.ports = [PortSpec(APP_PORT, "http")]
        inst.app_up = True
        inst.mappings = [PortMapping(APP_PORT, "http", app_endpoint(sim, novita_id))]
    sim.state.instances[novita_id] = inst
    return inst


def app_endpoint(sim: Simulator, novita_id: str) -> str:
    return f"{sim.gateway_url}/{novita_id}/{APP_PORT}/"


def instance_row(
    our_id: str,
    name: str,
    inst: SimInstance,
    *,
    status: str,
    now: datetime,
    next_check_at: datetime,
    observed_at: datetime | None = None,
) -> dict[str, object]:
    """Our row for a seeded instance, `running` at Novita since `now`: `status` is ours
    (`ready` also sets readyAt); its ports and mappings are the instance's."""
    return {
        "id": our_id,
        "name": name,
        "novita_instance_id": inst.id,
        "status": status,
        "provider_status": "running",
        "product_id": inst.product_id,
        "product_name": inst.product_name,
        "region": inst.cluster_name,
        "gpu_num": 1,
        "billing_mode": "onDemand",
        "regions": [],
        "ports": [{"port": p.port, "type": p.type} for p in inst.ports],
        "envs": [],
        "labels": {},
        "port_mappings": [
            {"port": m.port, "type": m.type, "endpoint": m.endpoint} for m in inst.mappings
        ],
        "created_at": now,
        "updated_at": now,
        "submitted_at": now,
        "running_at": now,
        **({"ready_at": now} if status == "ready" else {}),
        "provider_observed_at": now if observed_at is None else observed_at,
        "next_check_at": next_check_at,
        "event_seq": 0,
        "version": 1,
    }


async def insert_rows(
    database: Database, rows: Sequence[dict[str, object]], batch: int = BATCH
) -> None:
    """Insert instance rows, `batch` to a transaction."""
    for start in range(0, len(rows), batch):
        async with database.transaction() as conn:
            await conn.execute(instances.insert(), rows[start : start + batch])


def _rows(
    start: int, count: int, t0: datetime
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    rows, events = [], []
    for n in range(start, start + count):
        instance_id = f"inst_{uuid.uuid4().hex}"
        created = t0 + timedelta(seconds=n)
        rows.append(
            {
                "id": instance_id,
                "name": f"bench-{n}",
                "novita_instance_id": uuid.uuid4().hex[:16],
                "status": STATUSES[n % len(STATUSES)],
                "provider_status": "running",
                "product_id": "4090.16c62g",
                "product_name": "RTX 4090 24GB",
                "region": REGIONS[n % len(REGIONS)],
                "gpu_num": 1,
                "rootfs_size": 60,
                "billing_mode": "onDemand",
                "price_per_hour": Decimal("0.35"),
                "template_id": "212",
                "image_url": "pytorch/pytorch:latest",
                "preferred_region": "AS-SGP-02",
                "regions": [],
                "ports": [{"port": 8888, "type": "http"}],
                "envs": [],
                "labels": {"team": "bench", "shard": str(n % 10)},
                "port_mappings": [],
                "created_at": created,
                "updated_at": created,
                "event_seq": 1,
                "version": 1,
            }
        )
        events.append(
            {
                "instance_id": instance_id,
                "seq": 1,
                "at": created,
                "source": "api",
                "kind": "created",
                "to_status": "pending",
                "detail": {},
            }
        )
    return rows, events


async def main(url: str, count: int) -> list[str]:
    database = Database.from_url(url)
    try:
        await upgrade_to_head(database.engine)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        ids: list[str] = []
        for start in range(0, count, BATCH):
            rows, events = _rows(start, min(BATCH, count - start), t0)
            ids.extend(str(row["id"]) for row in rows)
            async with database.transaction() as conn:
                await conn.execute(instances.insert(), rows)
                await conn.execute(instance_events.insert(), events)
        return ids
    finally:
        await database.close()


if __name__ == "__main__":
    seeded = asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    if len(sys.argv) > 3:
        Path(sys.argv[3]).write_text("".join(f"{instance_id}\n" for instance_id in seeded))
    print(seeded[0])
