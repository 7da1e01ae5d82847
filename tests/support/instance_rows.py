"""Instance rows made straight through the repository."""

from __future__ import annotations

from datetime import UTC, datetime

from service.db import repository as repo
from service.db.engine import Database
from service.domain import InstanceSpec

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec(**overrides: object) -> InstanceSpec:
    values: dict[str, object] = {
        "name": "trainer",
        "product_name": "RTX 4090 24GB",
        "template_id": "212",
        "gpu_num": 2,
        "region": "AS-SGP-02",
        "regions": ("CN-HK-01",),
        "envs": ({"key": "HF_TOKEN", "value": "hf_secret"},),
        "labels": {"team": "vision"},
        "webhook_url": "https://hooks.example.com/novita",
    }
    values.update(overrides)
    return InstanceSpec(**values)  # type: ignore[arg-type]


async def create(database: Database, **overrides: object) -> str:
    async with database.transaction() as conn:
        result = await repo.insert_instance(conn, spec(**overrides), now=T0)
    return result.instance.id
