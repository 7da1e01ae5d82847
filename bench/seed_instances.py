"""Fill a database with N instances (and their first event) for read benchmarks.

    python bench/seed_instances.py DATABASE_URL N [IDS_FILE]

The database is migrated first. Rows are inserted in batches with Core `executemany`;
prints one instance id to stdout, and writes every id (one per line, in insertion order)
to IDS_FILE when given.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.db.models import instance_events, instances

STATUSES = ["running", "ready", "stopped", "deleted", "failed", "provisioning"]
REGIONS = ["AS-SGP-02", "CN-HK-01", "AS-IN-01", "US-CA-06"]
BATCH = 5000


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
