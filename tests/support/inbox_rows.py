"""Inbox records as the webhook writer stores them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from service.db.inbox import InboxRecord

NOW = datetime(2026, 3, 1, 12, 0, 30, 123456, tzinfo=UTC)


def record(n: int) -> InboxRecord:
    body = {"type": "instance.status_changed", "data": {"instanceId": f"i{n}", "n": n}}
    # Sent with its own spacing: the stored text is what was sent, byte for byte.
    return InboxRecord(f"msg_{n}", "instance.status_changed", f"i{n}", json.dumps(body))
