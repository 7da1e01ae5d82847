"""The body and headers of one delivery.

Standard Webhooks v1 (`webhook-id`, `webhook-timestamp`, `webhook-signature`), keyed with
the key inside `WEBHOOK_SECRET` (`whsec_<base64 key>`, decoded), plus the
`X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, body)>` and `X-Webhook-Timestamp`
headers that receivers written for the earlier service check. That service keyed its HMAC
with the configured secret string exactly as written (its UTF-8 bytes, `whsec_` prefix and
all, nothing decoded), so the legacy header does the same: a receiver written for it
verifies with the same secret string. The secret itself never appears in a header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from service import __version__
from service.settings import decode_webhook_secret
from service.signatures import sign

USER_AGENT = f"novita-lifecycle/{__version__} (webhook notifier)"


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The two HMAC keys one `WEBHOOK_SECRET` gives. Never printed (no repr of the keys)."""

    standard: bytes  # the decoded key of `whsec_<base64>` (Standard Webhooks)
    legacy: bytes  # the secret string as written, UTF-8 (the earlier service's header)

    @classmethod
    def from_secret(cls, secret: str) -> SigningKeys:
        return cls(standard=decode_webhook_secret(secret), legacy=secret.encode())

    def __repr__(self) -> str:
        return "SigningKeys(<hidden>)"


def delivery_headers(
    *, keys: SigningKeys, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Headers of one attempt; `timestamp` (unix seconds) is fresh for every attempt."""
    legacy = hmac.new(keys.legacy, body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys.standard, message_id, timestamp, body),
        "X-Webhook-Signature": f"sha256={legacy}",
        "X-Webhook-Timestamp": str(timestamp),
    }
