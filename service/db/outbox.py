"""All SQL of notification delivery: claims, attempts, outcomes, disabled targets, listing
and redelivery of outbox rows (the rows themselves are written by `repository`).

Claims: a notifier selects due rows (`pending`, `next_attempt_at <= now`, claim free or
expired) and writes its owner id and a claim expiry onto them. On PostgreSQL the selection
is `FOR UPDATE SKIP LOCKED`, so concurrent notifiers take disjoint rows without waiting;
SQLite writers are serialised by `BEGIN IMMEDIATE`. An outcome is written only while the
claim is still held (owner matches, row still pending); a claim that expired because its
process died lets another notifier retry the row (at-least-once; receivers dedupe on
`webhook-id` = the row id). The attempt itself is recorded either way: it happened.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.keyset import Page, page_of, page_query
from service.db.models import (
    disabled_webhook_targets,
    instances,
    outbox,
    outbox_attempts,
    outbox_redeliveries,
)
from service.errors import NotificationNotFoundError, NotificationPendingError
from service.notifications.models import (
    AttemptOutcome,
    ClaimedNotification,
    DeliveryResult,
    DueNotification,
    Notification,
    NotificationAttempt,
    NotificationDetail,
    NotificationStatus,
)

_ERROR_LIMIT = 1000
# Bound the number of bound parameters per statement (SQLite and asyncpg both limit them).
_CHUNK = 500
PENDING = NotificationStatus.PENDING.value


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]


def _clip(text: str | None) -> str | None:
    return text[:_ERROR_LIMIT] if text is not None else None


def _notification_from_row(row: sa.Row[Any]) -> Notification:
    m = row._mapping
    return Notification(
        id=m["id"],
        instance_id=m["instance_id"],
        sequence=m["event_seq"],
        type=m["type"],
        status=NotificationStatus(m["status"]),
        target_url=m["target_url"],
        payload=dict(m["payload"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        last_status_code=m["last_status_code"],
        last_error=m["last_error"],
        delivered_at=m["delivered_at"],
    )


def _attempt_from_row(row: sa.Row[Any]) -> NotificationAttempt:
    m = row._mapping
    return NotificationAttempt(
        number=m["number"],
        started_at=m["started_at"],
        duration_ms=m["duration_ms"],
        target_url=m["target_url"],
        outcome=AttemptOutcome(m["outcome"]),
        status_code=m["status_code"],
        error=m["error"],
    )


def _is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


# --- claims -------------------------------------------------------------------------------


def _ladder_start() -> sa.ScalarSelect[Any]:
    """`attempts` of the row when its newest redelivery started a fresh ladder (else 0)."""
    return (
        sa.select(outbox_redeliveries.c.attempts_before)
        .where(outbox_redeliveries.c.outbox_id == outbox.c.id)
        .order_by(outbox_redeliveries.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


async def select_due(conn: AsyncConnection, *, now: datetime, limit: int) -> list[DueNotification]:
    """Due, unclaimed (or claim-expired) rows, oldest due first; locked on PostgreSQL.

    Payloads are not read here (most candidates may be left for a later batch); `claim`
    reads them for the rows taken, in the same transaction.
    """
    query = (
        sa.select(
            outbox.c.id,
            outbox.c.instance_id,
            outbox.c.type,
            outbox.c.target_url,
            outbox.c.attempts,
            sa.func.coalesce(_ladder_start(), 0).label("ladder_start"),
        )
        .where(
            outbox.c.status == PENDING,
            outbox.c.next_attempt_at <= now,
            sa.or_(outbox.c.claim_owner.is_(None), outbox.c.claim_expires_at <= now),
        )
        .order_by(outbox.c.next_attempt_at, outbox.c.event_seq, outbox.c.id)
        .limit(limit)
    )
    if _is_postgres(conn):
        query = query.with_for_update(skip_locked=True, of=outbox)
    rows = await conn.execute(query)
    return [
        DueNotification(
            id=row.id,
            instance_id=row.instance_id,
            type=row.type,
            target_url=row.target_url,
            attempts=row.attempts,
            ladder_attempts=max(0, row.attempts - row.ladder_start),
        )
        for row in rows
    ]


async def claim(
    conn: AsyncConnection,
    rows: Sequence[DueNotification],
    *,
    owner: str,
    now: datetime,
    expires_at: datetime,
) -> list[ClaimedNotification]:
    """Reserve rows returned by `select_due` (in the same transaction) for `owner`."""
    payloads: dict[str, Any] = {}
    for chunk in _chunks([row.id for row in rows]):
        result = await conn.execute(
            outbox.update()
            .where(outbox.c.id.in_(chunk), outbox.c.status == PENDING)
            .values(claim_owner=owner, claim_expires_at=expires_at, updated_at=now)
            .returning(outbox.c.id, outbox.c.payload)
        )
        payloads.update({item.id: item.payload for item in result})
    return [
        ClaimedNotification(
            id=row.id,
            instance_id=row.instance_id,
            type=row.type,
            payload=dict(payloads[row.id]),
            target_url=row.target_url,
            attempts=row.attempts,
            ladder_attempts=row.ladder_attempts,
        )
        for row in rows
        if row.id in payloads
    ]


async def close_unsent(
    conn: AsyncConnection,
    ids: Sequence[str],
    *,
    status: NotificationStatus,
    error: str,
    now: datetime,
) -> None:
    """Finish rows that will not be sent (no target, disabled target, no signing secret)."""
    for chunk in _chunks(ids):
        await conn.execute(
            outbox.update()
            .where(outbox.c.id.in_(chunk), outbox.c.status == PENDING)
            .values(
                status=status.value,
                last_error=_clip(error),
                next_attempt_at=None,
                claim_owner=None,
                claim_expires_at=None,
                updated_at=now,
            )
        )


# --- outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt and what the row becomes because of it."""

    claimed: ClaimedNotification
    result: DeliveryResult
    status: NotificationStatus
    next_attempt_at: datetime | None = None


async def record_attempts(
    conn: AsyncConnection, records: Sequence[AttemptRecord], *, owner: str, now: datetime
) -> set[str]:
    """Append the attempts and apply the outcomes whose claim `owner` still holds.

    Returns the ids whose outcome was applied; for the others the claim was lost (expired
    and retaken, or the row was cancelled meanwhile) and only the attempt row is written.
    """
    if not records:
        return set()
    held_query = sa.select(outbox.c.id).where(
        outbox.c.id.in_([record.claimed.id for record in records]),
        outbox.c.claim_owner == owner,
        outbox.c.status == PENDING,
    )
    if _is_postgres(conn):
        held_query = held_query.with_for_update()
    held = set((await conn.execute(held_query)).scalars())

    await conn.execute(
        outbox_attempts.insert(),
        [
            {
                "outbox_id": record.claimed.id,
                "number": record.claimed.attempts + 1,
                "started_at": record.result.started_at,
                "duration_ms": record.result.duration_ms,
                "target_url": record.result.target_url,
                "outcome": record.result.outcome.value,
                "status_code": record.result.status_code,
                "error": _clip(record.result.error),
                "owner": owner,
            }
            for record in records
        ],
    )
    applied = [record for record in records if record.claimed.id in held]
    if applied:
        await conn.execute(
            outbox.update()
            .where(outbox.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("b_status"),
                attempts=sa.bindparam("b_attempts"),
                next_attempt_at=sa.bindparam("b_next"),
                last_status_code=sa.bindparam("b_code"),
                last_error=sa.bindparam("b_error"),
                delivered_at=sa.bindparam("b_delivered"),
                claim_owner=None,
                claim_expires_at=None,
                updated_at=now,
            ),
            [
                {
                    "b_id": record.claimed.id,
                    "b_status": record.status.value,
                    "b_attempts": record.claimed.attempts + 1,
                    "b_next": record.next_attempt_at,
                    "b_code": record.result.status_code,
                    "b_error": _clip(record.result.error),
                    "b_delivered": (now if record.status is NotificationStatus.DELIVERED else None),
                }
                for record in applied
            ],
        )
    return {record.claimed.id for record in applied}


# --- disabled targets (410 Gone) ----------------------------------------------------------


async def disabled_targets(conn: AsyncConnection, urls: Collection[str]) -> set[str]:
    """Which of `urls` are disabled."""
    if not urls:
        return set()
    rows = await conn.execute(
        sa.select(disabled_webhook_targets.c.url).where(
            disabled_webhook_targets.c.url.in_(list(urls))
        )
    )
    return set(rows.scalars())


async def disable_target(
    conn: AsyncConnection, url: str, *, now: datetime, outbox_id: str, status_code: int
) -> bool:
    """Remember `url` as disabled; False when it already was."""
    values = {
        "url": url,
        "disabled_at": now,
        "outbox_id": outbox_id,
        "status_code": status_code,
    }
    insert = (postgresql.insert if _is_postgres(conn) else sqlite.insert)(disabled_webhook_targets)
    result = await conn.execute(insert.values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


async def enable_target(conn: AsyncConnection, url: str) -> bool:
    """Forget that `url` was disabled (its cancelled notifications may then be redelivered)."""
    result = await conn.execute(
        disabled_webhook_targets.delete().where(disabled_webhook_targets.c.url == url)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class DisabledTarget:
    url: str
    disabled_at: datetime
    notification_id: str | None
    status_code: int


async def list_disabled_targets(conn: AsyncConnection) -> list[DisabledTarget]:
    rows = await conn.execute(
        sa.select(disabled_webhook_targets).order_by(disabled_webhook_targets.c.disabled_at)
    )
    return [
        DisabledTarget(
            url=row.url,
            disabled_at=row.disabled_at,
            notification_id=row.outbox_id,
            status_code=row.status_code,
        )
        for row in rows
    ]


async def cancel_pending_for_target(
    conn: AsyncConnection, url: str, *, include_untargeted: bool, now: datetime, reason: str
) -> list[tuple[str, str]]:
    """Cancel pending rows sent to `url` (and rows without a target when `url` is the
    default); return their `(id, instance_id)`."""
    matches = outbox.c.target_url == url
    if include_untargeted:
        matches = sa.or_(matches, outbox.c.target_url.is_(None))
    result = await conn.execute(
        outbox.update()
        .where(outbox.c.status == PENDING, matches)
        .values(
            status=NotificationStatus.CANCELLED.value,
            last_error=_clip(reason),
            next_attempt_at=None,
            claim_owner=None,
            claim_expires_at=None,
            updated_at=now,
        )
        .returning(outbox.c.id, outbox.c.instance_id)
    )
    return [(row.id, row.instance_id) for row in result]


# --- reading and redelivery (REST API) ----------------------------------------------------


def _of_team(team: str) -> sa.ColumnElement[bool]:
    """Notifications of the instances of `team` (API keys see their own team's only)."""
    return outbox.c.instance_id.in_(sa.select(instances.c.id).where(instances.c.team == team))


async def list_notifications(
    conn: AsyncConnection,
    *,
    instance_id: str | None = None,
    status: NotificationStatus | str | None = None,
    type: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
    team: str | None = None,
) -> Page[Notification]:
    """One page of notifications, oldest first, in (created_at, id) order; `after` is the
    (created_at, id) of the last one of the previous page."""
    query = sa.select(outbox)
    if team is not None:
        query = query.where(_of_team(team))
    if instance_id is not None:
        query = query.where(outbox.c.instance_id == instance_id)
    if status is not None:
        query = query.where(outbox.c.status == NotificationStatus(status).value)
    if type is not None:
        query = query.where(outbox.c.type == type)
    query = page_query(query, [outbox.c.created_at, outbox.c.id], after=after, limit=limit)
    items = [_notification_from_row(row) for row in await conn.execute(query)]
    return page_of(items, limit, lambda item: (item.created_at, item.id))


async def get_notification(
    conn: AsyncConnection, notification_id: str, *, team: str | None = None
) -> NotificationDetail:
    """A notification with every attempt, oldest first (another team's: not found)."""
    query = sa.select(outbox).where(outbox.c.id == notification_id)
    if team is not None:
        query = query.where(_of_team(team))
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotificationNotFoundError(
            f"no notification with id {notification_id!r}", notificationId=notification_id
        )
    attempts = await conn.execute(
        sa.select(outbox_attempts)
        .where(outbox_attempts.c.outbox_id == notification_id)
        .order_by(outbox_attempts.c.id)
    )
    return NotificationDetail(
        notification=_notification_from_row(row),
        attempts=tuple(_attempt_from_row(attempt) for attempt in attempts),
    )


def _redeliver_values(now: datetime) -> dict[str, Any]:
    return {
        "status": PENDING,
        "next_attempt_at": now,
        "delivered_at": None,
        "claim_owner": None,
        "claim_expires_at": None,
        "updated_at": now,
    }


async def redeliver_notification(
    conn: AsyncConnection, notification_id: str, *, now: datetime, team: str | None = None
) -> Notification:
    """Queue a finished notification (any status but pending) again, due now, on a fresh
    retry ladder; its attempt count and history are kept. A target disabled by 410 stays
    disabled (the row is cancelled again) until `enable_target`."""
    query = sa.select(outbox).where(outbox.c.id == notification_id)
    if team is not None:
        query = query.where(_of_team(team))
    if _is_postgres(conn):
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotificationNotFoundError(
            f"no notification with id {notification_id!r}", notificationId=notification_id
        )
    if row.status == PENDING:
        raise NotificationPendingError(
            f"notification {notification_id} is still pending delivery",
            notificationId=notification_id,
        )
    await conn.execute(
        outbox_redeliveries.insert().values(
            outbox_id=notification_id,
            requested_at=now,
            attempts_before=row.attempts,
            previous_status=row.status,
        )
    )
    await conn.execute(
        outbox.update().where(outbox.c.id == notification_id).values(**_redeliver_values(now))
    )
    return (await get_notification(conn, notification_id)).notification


async def redeliver_failed_since(
    conn: AsyncConnection,
    since: datetime,
    *,
    now: datetime,
    instance_id: str | None = None,
    team: str | None = None,
) -> int:
    """Redeliver every dead-lettered (`failed`) notification that failed at or after
    `since` (optionally of one instance); return how many were queued."""
    query = sa.select(outbox.c.id, outbox.c.attempts).where(
        outbox.c.status == NotificationStatus.FAILED.value, outbox.c.updated_at >= since
    )
    if instance_id is not None:
        query = query.where(outbox.c.instance_id == instance_id)
    if team is not None:
        query = query.where(_of_team(team))
    if _is_postgres(conn):
        query = query.with_for_update()
    rows = (await conn.execute(query.order_by(outbox.c.created_at, outbox.c.id))).all()
    if not rows:
        return 0
    await conn.execute(
        outbox_redeliveries.insert(),
        [
            {
                "outbox_id": row.id,
                "requested_at": now,
                "attempts_before": row.attempts,
                "previous_status": NotificationStatus.FAILED.value,
            }
            for row in rows
        ],
    )
    for chunk in _chunks([row.id for row in rows]):
        await conn.execute(
            outbox.update().where(outbox.c.id.in_(chunk)).values(**_redeliver_values(now))
        )
    return len(rows)
