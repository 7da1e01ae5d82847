"""Standard Webhooks v1 signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}`, base64-encoded."""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` entry for one message: `v1,<base64 HMAC-SHA256>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.digest(key, signed, "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


@lru_cache(maxsize=32)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC with the key already mixed in; each message works on a copy of it (keying
    costs more than hashing a small webhook)."""
    return hmac.new(key, digestmod=hashlib.sha256)


MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """Why a webhook's signature was not accepted (the message says which check failed)."""


def verify(
    keys: list[bytes],
    *,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: float = 300,
) -> int:
    """Check a Standard Webhooks signature; return the message timestamp.

    Every `v1,<base64>` entry of the space-separated header is tried against every key, so
    senders and receivers can rotate secrets without downtime. Comparison is constant-time.
    """
    if not msg_id or timestamp is None or signature is None:
        missing = [
            name
            for name, value in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if not value
        ]
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    text = timestamp.strip()
    # ASCII digits only (str.isdigit() also takes "²" and other scripts' digits), and
    # short: 12 digits reach the year 33658, so a longer value is never a valid time.
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureError("webhook-timestamp is not a whole number of seconds")
    sent_at = int(text)
    if sent_at < now - tolerance:
        raise SignatureError(f"webhook-timestamp is more than {tolerance:g} s old")
    if sent_at > now + tolerance:
        raise SignatureError(f"webhook-timestamp is more than {tolerance:g} s in the future")
    candidates: list[bytes] = []
    for entry in signature.split():
        version, comma, encoded = entry.partition(",")
        if not comma:
            raise SignatureError("webhook-signature has an entry without a comma")
        if version != "v1":
            continue  # other schemes (e.g. v1a asymmetric) are not ours to check
        try:
            candidates.append(base64.b64decode(encoded, validate=True))
        except ValueError:
            raise SignatureError("webhook-signature has an entry that is not base64") from None
    if not candidates:
        raise SignatureError("webhook-signature has no v1 entry")
    signed = f"{msg_id}.{timestamp.strip()}.".encode() + body
    matched = False
    for key in keys:
        mac = _keyed(key).copy()
        mac.update(signed)
        expected = mac.digest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no webhook-signature entry matches (wrong secret or altered body)")
    return sent_at
