"""The body and headers of one delivery.

Standard Webhooks v1 (`webhook-id`, `webhook-timestamp`, `webhook-signature`), plus the
`X-Webhook-Signature: sha256=<hex HMAC-SHA256(key, body)>` and `X-Webhook-Timestamp`
headers that receivers written for the earlier service check. Both HMACs use the decoded
`whsec_` key; the secret itself never appears in a header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from service import __version__
from service.signatures import sign

USER_AGENT = f"novita-lifecycle/{__version__} (webhook notifier)"


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def delivery_headers(*, key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Headers of one attempt; `timestamp` (unix seconds) is fresh for every attempt."""
    legacy = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
        "X-Webhook-Signature": f"sha256={legacy}",
        "X-Webhook-Timestamp": str(timestamp),
    }
