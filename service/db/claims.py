"""Claims on instance rows: how several worker processes share work without doing it twice.

A claim is `claim_owner` plus `claim_expires_at` on the row. Claiming is one statement,
`UPDATE ... WHERE id IN (due rows whose claim is free or expired) RETURNING *`, in one
short transaction; the slow part (calls to Novita) happens after it commits, and the
result is written in another.

- PostgreSQL: the due rows are chosen `FOR UPDATE SKIP LOCKED`, so concurrent claimers
  skip each other's rows instead of queueing on them, and each row goes to exactly one.
- SQLite: writers are serialised by `BEGIN IMMEDIATE` (see `service.db.engine`), so the
  plain sub-select is already exclusive; there is no row locking to ask for.

A process that dies holding claims loses them when they expire; its work is picked up
again from what the database says (an intent written before a create, see `record_intent`).
Claim bookkeeping does not bump `version` or `updated_at`: it is not a change to the
instance anyone outside the workers should see.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import instances
from service.db.repository import instance_from_mapping
from service.domain import TERMINAL_STATUSES, TRANSITIONAL_STATUSES, Instance, Status


def _claim_is_free(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(instances.c.claim_owner.is_(None), instances.c.claim_expires_at <= now)


async def _claim(
    conn: AsyncConnection,
    condition: sa.ColumnElement[bool],
    *,
    owner: str,
    now: datetime,
    ttl: float,
    limit: int,
    also: Mapping[str, object] | None = None,
) -> list[Instance]:
    """Claim up to `limit` rows meeting `condition`, writing `also` with the claim."""
    due = (
        sa.select(instances.c.id)
        .where(condition, _claim_is_free(now))
        .order_by(instances.c.next_check_at, instances.c.id)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":
        due = due.with_for_update(skip_locked=True)
    # One statement: the claimed rows come back as written, in the order they fell due.
    rows = await conn.execute(
        instances.update()
        .where(instances.c.id.in_(due.scalar_subquery()))
        .values(
            claim_owner=owner, claim_expires_at=now + timedelta(seconds=ttl), **(also or {})
        )
        .returning(instances)
    )
    claimed = [instance_from_mapping(row._mapping) for row in rows]
    claimed.sort(key=lambda i: (i.next_check_at is None, i.next_check_at, i.id))
    return claimed


async def claim_pending(
    conn: AsyncConnection, *, owner: str, now: datetime, ttl: float, limit: int
) -> list[Instance]:
    """Claim instances waiting for the provisioner.

    That is `pending` rows that are due, plus `deleting` rows that were submitted but never
    learnt their Novita id (deleted while a create was in flight): the create may have
    landed, and only the provisioner can find it by name.
    """
    due = sa.or_(instances.c.next_check_at.is_(None), instances.c.next_check_at <= now)
    waiting = sa.or_(
        instances.c.status == Status.PENDING.value,
        sa.and_(
            instances.c.status == Status.DELETING.value,
            instances.c.novita_instance_id.is_(None),
            instances.c.submitted_at.is_not(None),
        ),
    )
    return await _claim(conn, sa.and_(waiting, due), owner=owner, now=now, ttl=ttl, limit=limit)


async def claim_due_for_poll(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    ttl: float,
    limit: int,
    transitional: bool | None = None,
) -> list[Instance]:
    """Claim live instances Novita knows whose next check is due; only those in a
    transitional status (`transitional=True`), only the others (False), or all (None)."""
    condition = sa.and_(
        instances.c.status.not_in([s.value for s in TERMINAL_STATUSES]),
        instances.c.novita_instance_id.is_not(None),
        instances.c.next_check_at <= now,
    )
    if transitional is not None:
        moving = instances.c.status.in_([s.value for s in TRANSITIONAL_STATUSES])
        condition = sa.and_(condition, moving if transitional else sa.not_(moving))
    return await _claim(conn, condition, owner=owner, now=now, ttl=ttl, limit=limit)


async def count_polled_slowly(conn: AsyncConnection) -> int:
    """How many instances the poll visits at the stable pace (live, known to Novita, not
    in a transitional status)."""
    settled = [s.value for s in (TERMINAL_STATUSES | TRANSITIONAL_STATUSES)]
    count = await conn.scalar(
        sa.select(sa.func.count()).where(
            instances.c.status.not_in(settled), instances.c.novita_instance_id.is_not(None)
        )
    )
    return int(count or 0)


async def record_intent(
    conn: AsyncConnection, instance_id: str, *, owner: str, now: datetime, ttl: float
) -> bool:
    """Write down that a create is about to be sent, and extend our claim for it.

    Committed before the call, so whoever handles the row next (this process after a
    restart, or another one after our claim expired) looks the instance up by name before
    creating again. False if the row is no longer ours or no longer pending.
    """
    result = await conn.execute(
        instances.update()
        .where(
            instances.c.id == instance_id,
            instances.c.status == Status.PENDING.value,
            instances.c.claim_owner == owner,
        )
        .values(
            submitted_at=now,
            claim_expires_at=now + timedelta(seconds=ttl),
            updated_at=now,
            version=instances.c.version + 1,
        )
    )
    return result.rowcount == 1


async def release(
    conn: AsyncConnection,
    instance_id: str,
    *,
    owner: str,
    next_check_at: datetime | None = None,
    failed_attempts: int | None = None,
) -> bool:
    """Give a claim back, optionally saying when the row is next due and how many polls in
    a row have failed (None: leave both as they are). False if not ours."""
    values: dict[str, object] = {"claim_owner": None, "claim_expires_at": None}
    if next_check_at is not None:
        values["next_check_at"] = next_check_at
    if failed_attempts is not None:
        values["failed_attempts"] = failed_attempts
    result = await conn.execute(
        instances.update()
        .where(instances.c.id == instance_id, instances.c.claim_owner == owner)
        .values(**values)
    )
    return result.rowcount == 1


async def claim_for_probe(
    conn: AsyncConnection,
    instance_ids: list[str],
    *,
    owner: str,
    now: datetime,
    ttl: float,
    probe_again_at: datetime,
) -> list[Instance]:
    """Claim those of `instance_ids` that are still `running`, due for a probe and not
    claimed by anyone else (a poll in flight, or another process's probe): one prober per
    instance at a time. The next probe is set to `probe_again_at` with the claim, so every
    process keeps to one pace per instance."""
    if not instance_ids:
        return []
    condition = sa.and_(
        instances.c.id.in_(instance_ids),
        instances.c.status == Status.RUNNING.value,
        _probe_is_due(now),
    )
    return await _claim(
        conn,
        condition,
        owner=owner,
        now=now,
        ttl=ttl,
        limit=len(instance_ids),
        also={"next_probe_at": probe_again_at},
    )


def _probe_is_due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(instances.c.next_probe_at.is_(None), instances.c.next_probe_at <= now)
