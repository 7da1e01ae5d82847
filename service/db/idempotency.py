"""Idempotency keys: one stored response per (caller, key), kept 24 hours.

A key is reserved (`in_flight`) before the work and completed with the response in the
same transaction as the work's own writes. The same key with a different request is a
conflict; so is a key whose first request is still running. A reservation left behind by a
crashed process is taken over once it is older than `ABANDONED_AFTER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import idempotency_keys
from service.errors import IdempotencyConflictError

KEEP_FOR = timedelta(hours=24)
ABANDONED_AFTER = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


def _this_key(scope: str, key: str) -> sa.ColumnElement[bool]:
    return sa.and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)


async def reserve(
    conn: AsyncConnection, scope: str, key: str, fingerprint: str, *, now: datetime
) -> StoredResponse | None:
    """Reserve `key` for this request, or return the response to replay.

    Raises `IdempotencyConflictError` when the key belongs to a different request or its
    first request is still in flight.
    """
    await conn.execute(idempotency_keys.delete().where(idempotency_keys.c.expires_at < now))
    row = (
        await conn.execute(
            sa.select(idempotency_keys).where(_this_key(scope, key)).with_for_update()
        )
    ).first()
    if row is not None:
        stored = row._mapping
        if stored["fingerprint"] != fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different request",
                idempotencyKey=key,
            )
        if stored["state"] == "completed":
            return StoredResponse(stored["response_status"], dict(stored["response_body"]))
        if stored["created_at"] > now - ABANDONED_AFTER:
            raise IdempotencyConflictError(
                "a request with this Idempotency-Key is still in flight; retry later",
                idempotencyKey=key,
            )
        await conn.execute(
            idempotency_keys.update().where(_this_key(scope, key)).values(created_at=now)
        )
        return None
    try:
        async with conn.begin_nested():
            await conn.execute(
                idempotency_keys.insert().values(
                    scope=scope,
                    key=key,
                    fingerprint=fingerprint,
                    state="in_flight",
                    created_at=now,
                    expires_at=now + KEEP_FOR,
                )
            )
    except IntegrityError:
        raise IdempotencyConflictError(
            "a request with this Idempotency-Key is still in flight; retry later",
            idempotencyKey=key,
        ) from None
    return None


async def complete(
    conn: AsyncConnection,
    scope: str,
    key: str,
    *,
    status: int,
    body: dict[str, Any],
    now: datetime,
) -> None:
    await conn.execute(
        idempotency_keys.update()
        .where(_this_key(scope, key))
        .values(
            state="completed",
            response_status=status,
            response_body=body,
            expires_at=now + KEEP_FOR,
        )
    )


async def release(conn: AsyncConnection, scope: str, key: str) -> None:
    """Forget a reservation whose request failed, so the client may retry with the key."""
    await conn.execute(
        idempotency_keys.delete().where(
            _this_key(scope, key), idempotency_keys.c.state == "in_flight"
        )
    )
