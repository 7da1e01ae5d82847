"""Page cursors: an opaque token for "after this (time, id)" in a listing's order.

A client sends back what we gave it, but anything can arrive: decoding bounds the token's
length, parses with orjson (no recursion, whatever the token decodes to) and accepts only
`[ISO time with zone, id]` with a sane time and id; anything else is `ValueError`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson

MAX_TOKEN = 512
MAX_ID = 64


def encode_position(created_at: datetime, item_id: str) -> str:
    raw = orjson.dumps([created_at.isoformat(), item_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_position(token: str) -> tuple[datetime, str]:
    if not token.isascii() or len(token) > MAX_TOKEN:
        raise ValueError("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor") from None
    if not (isinstance(value, list) and len(value) == 2):
        raise ValueError("not a cursor")
    created_at, item_id = value
    if not (isinstance(created_at, str) and isinstance(item_id, str)):
        raise ValueError("not a cursor")
    if not item_id or len(item_id) > MAX_ID or "\x00" in item_id:
        raise ValueError("not a cursor")
    when = datetime.fromisoformat(created_at)
    if when.tzinfo is None:
        raise ValueError("not a cursor")
    try:
        return when.astimezone(UTC), item_id
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00
        raise ValueError("not a cursor") from None
