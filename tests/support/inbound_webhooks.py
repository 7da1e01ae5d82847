"""Signed inbound webhooks: building, posting and reading back what was stored."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from service.db.models import inbound_webhooks
from tests.plugins.service import INBOUND_SECRET, ServiceUnderTest


def event(instance_id: str = "0123456789abcdef", status: str = "running") -> dict[str, Any]:
    return {
        "type": "instance.status_changed",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"instanceId": instance_id, "status": status},
    }


def signed(
    service: ServiceUnderTest,
    payload: Any,
    *,
    msg_id: str | None = None,
    secret: str = INBOUND_SECRET,
    at: float | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = (
        service.clock.now()
        if at is None
        else __import__("datetime").datetime.fromtimestamp(at, tz=__import__("datetime").UTC)
    )
    signature = Webhook(secret).sign(msg_id, when, raw.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
    return raw, headers


async def post(service: ServiceUnderTest, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    status, body, _ = await service.call(
        "POST", "/webhooks/novita", data=raw, headers=headers, auth=False
    )
    return status, body


async def until(condition: Any, within: float = 5.0) -> None:
    """Wait for a state another task will reach (bounded; no fixed sleeps)."""
    async with asyncio.timeout(within):
        # Polling a counter of the writer: it has no event to wait on, and adding one
        # to production code only for this test is not worth it.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def stored(service: ServiceUnderTest) -> list[dict[str, Any]]:
    async with service.resources.database.read() as conn:
        rows = await conn.execute(sa.select(inbound_webhooks).order_by(inbound_webhooks.c.id))
        return [dict(row._mapping) for row in rows]
