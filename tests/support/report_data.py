"""Rows the report tests read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from service.db.engine import Database
from service.db.models import (
    inbound_webhooks,
    instance_events,
    instances,
    outbox,
    webhook_tallies,
)

RTX, A100 = "RTX 4090 24GB", "A100 80GB"


SGP, HK = "AS-SGP-02", "CN-HK-01"


def t(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def attempt(region: str) -> dict[str, str]:
    return {
        "region": region,
        "clusterId": region.lower(),
        "productId": "p4090",
        "productName": RTX,
        "code": "INSUFFICIENT_RESOURCE",
    }


def instance_row(instance_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": instance_id,
        "name": instance_id,
        "status": "pending",
        "gpu_num": 1,
        "billing_mode": "onDemand",
        "regions": [],
        "ports": [],
        "envs": [],
        "labels": {},
        "port_mappings": [],
        "event_seq": 0,
        "version": 1,
    }
    row.update(fields)
    row.setdefault("updated_at", row["created_at"])
    return row


Step = tuple[datetime, str, str, str | None, dict[str, Any]]  # at, source, to, reason, detail


def event_rows(
    instance_id: str, steps: list[Step], *, kinds: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    rows, previous = [], None
    for seq, (at, source, to_status, reason, detail) in enumerate(steps, start=1):
        rows.append(
            {
                "instance_id": instance_id,
                "seq": seq,
                "at": at,
                "source": source,
                "kind": (kinds or {}).get(seq, "created" if seq == 1 else "status_changed"),
                "from_status": previous,
                "to_status": to_status,
                "reason": reason,
                "detail": detail,
            }
        )
        previous = to_status
    return rows


# The history, with what each report must say about it worked out below each instance.
HISTORY: dict[str, tuple[dict[str, Any], list[Step]]] = {
    # Fell back from HK to SGP; billed 03-01 10:05 → 03-02 02:00 on 2 GPUs at $0.50.
    # to_running 300 s, to_ready 600 s.
    "inst_a": (
        {
            "created_at": t(1, 10),
            "status": "stopped",
            "product_id": "p4090",
            "product_name": RTX,
            "region": SGP,
            "preferred_region": HK,
            "gpu_num": 2,
            "price_per_hour": Decimal("0.50"),
        },
        [
            (t(1, 10), "api", "pending", None, {}),
            (t(1, 10, 1), "provisioner", "provisioning", None, {"capacityAttempts": [attempt(HK)]}),
            (t(1, 10, 5), "webhook", "running", None, {}),
            (t(1, 10, 10), "reconciler", "ready", None, {}),
            (t(2, 2), "api", "stopping", None, {}),
            (t(2, 2, 5), "webhook", "stopped", None, {}),
        ],
    ),
    # Spot A100 in HK, ready since 03-01 12:40 and still billing (open until NOW);
    # billed from 12:30 at $1.20. to_running 1800 s, to_ready 2400 s. One note (no change).
    "inst_b": (
        {
            "created_at": t(1, 12),
            "status": "ready",
            "product_id": "a100",
            "product_name": A100,
            "region": HK,
            "preferred_region": HK,
            "billing_mode": "spot",
            "price_per_hour": Decimal("1.20"),
        },
        [
            (t(1, 12), "api", "pending", None, {}),
            (t(1, 12, 2), "provisioner", "provisioning", None, {"capacityAttempts": []}),
            (t(1, 12, 30), "reconciler", "running", None, {}),
            (t(1, 12, 40), "reconciler", "ready", None, {}),
            (t(2, 6), "reconciler", "ready", "probe", {}),
        ],
    ),
    # No capacity anywhere: failed before it was placed (two capacity errors).
    "inst_c": (
        {
            "created_at": t(1, 14),
            "status": "failed",
            "status_reason": "no_capacity",
            "product_name": RTX,
            "preferred_region": SGP,
        },
        [
            (t(1, 14), "api", "pending", None, {}),
            (
                t(1, 14, 1),
                "provisioner",
                "failed",
                "no_capacity",
                {"attempts": [attempt(SGP), attempt(HK)]},
            ),
        ],
    ),
    # Deleted by the client before it ran: cancelled. No preferred region.
    "inst_d": (
        {
            "created_at": t(1, 15),
            "status": "deleted",
            "product_id": "a100",
            "product_name": A100,
            "region": SGP,
            "gpu_num": 4,
            "price_per_hour": Decimal("1.00"),
        },
        [
            (t(1, 15), "api", "pending", None, {}),
            (t(1, 15, 1), "provisioner", "provisioning", None, {"capacityAttempts": []}),
            (t(1, 15, 10), "api", "deleting", None, {}),
            (t(1, 15, 12), "reconciler", "deleted", None, {}),
        ],
    ),
    # Ran 03-02 09:11 → 09:31, then failed its startup timeout. to_running 660 s.
    "inst_e": (
        {
            "created_at": t(2, 9),
            "status": "failed",
            "status_reason": "startup_timeout",
            "product_id": "p4090",
            "product_name": RTX,
            "region": SGP,
            "preferred_region": SGP,
            "price_per_hour": Decimal("0.50"),
        },
        [
            (t(2, 9), "api", "pending", None, {}),
            (t(2, 9, 1), "provisioner", "provisioning", None, {"capacityAttempts": []}),
            (t(2, 9, 11), "webhook", "running", None, {}),
            (t(2, 9, 31), "reconciler", "failed", "startup_timeout", {}),
        ],
    ),
}


async def seed(database: Database) -> None:
    async with database.transaction() as conn:
        for instance_id, (fields, steps) in HISTORY.items():
            await conn.execute(
                instances.insert(), [instance_row(instance_id, event_seq=len(steps), **fields)]
            )
            kinds = {5: "probe"} if instance_id == "inst_b" else None
            rows = event_rows(instance_id, steps, kinds=kinds)
            if instance_id == "inst_b":
                rows[-1]["from_status"] = "ready"  # a note: the status did not change
            await conn.execute(instance_events.insert(), rows)
        await conn.execute(
            inbound_webhooks.insert(),
            [
                webhook("w1", t(1, 10, 5), "applied"),
                webhook("w2", t(2, 2, 5), "stale"),
                webhook("w3", t(2, 23, 59), None),
                webhook("w0", t(1, 0) - timedelta(seconds=1), "applied"),  # before the window
            ],
        )
        await conn.execute(
            webhook_tallies.insert(),
            [
                {"minute": t(1, 10), "outcome": "duplicate", "count": 2},
                {"minute": t(1, 11), "outcome": "invalid_signature", "count": 3},
                {"minute": t(2, 8), "outcome": "malformed_request", "count": 1},
                {"minute": t(3, 0), "outcome": "invalid_signature", "count": 5},  # after it
            ],
        )
        await conn.execute(
            outbox.insert(),
            [
                notification("inst_a", 1, t(1, 10), "delivered", 1.0),
                notification("inst_a", 2, t(1, 10, 1), "delivered", 2.0),
                notification("inst_a", 3, t(1, 10, 5), "delivered", 10.0),
                notification("inst_b", 1, t(1, 12), "failed"),
                notification("inst_b", 2, t(2, 12), "pending"),
                notification("inst_e", 1, t(3, 1), "delivered", 50.0),  # after the window
            ],
        )


def webhook(webhook_id: str, received_at: datetime, outcome: str | None) -> dict[str, Any]:
    return {
        "webhook_id": webhook_id,
        "received_at": received_at,
        "event_type": "instance.status_changed",
        "payload": {},
        "processed_at": received_at if outcome else None,
        "outcome": outcome,
    }


def notification(
    instance_id: str, seq: int, created_at: datetime, status: str, latency: float | None = None
) -> dict[str, Any]:
    return {
        "id": f"evt_{instance_id}_{seq}",
        "instance_id": instance_id,
        "event_seq": seq,
        "type": "instance.status_changed",
        "payload": {},
        "status": status,
        "attempts": 1,
        "created_at": created_at,
        "updated_at": created_at,
        "delivered_at": created_at + timedelta(seconds=latency) if latency is not None else None,
    }
