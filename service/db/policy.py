"""SQL of the policy worker: its own claims, idle and interrupted candidates, recovery state,
replacement links and the policies a client changes with PATCH.

The policy claim (`policy_claim_owner`, `policy_claim_expires_at`) is separate from the
reconciler's poll claim: a poll and a policy decision may overlap (the policy acts through
the state machine, which locks the row), but two policy workers never act on one instance
at once. A claim is taken by one conditional UPDATE that also re-checks the status, so on
both engines exactly one claimer wins, and a row that moved on since it was read is not
taken at all. Claim and recovery bookkeeping does not bump `version`: it is worker state,
not a change clients see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import repository as repo
from service.db.engine import Database
from service.db.models import instances
from service.domain import EventSource, Instance, Status
from service.errors import IllegalTransitionError

_c = instances.c


def _claim_is_free(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(_c.policy_claim_owner.is_(None), _c.policy_claim_expires_at <= now)


async def idle_candidates(
    conn: AsyncConnection, *, include_without_policy: bool, now: datetime, limit: int
) -> list[Instance]:
    """`ready` instances not claimed by a policy worker that have an idle policy (or all of
    them, when the service has a default one)."""
    query = sa.select(instances).where(_c.status == Status.READY.value, _claim_is_free(now))
    if not include_without_policy:
        query = query.where(_c.auto_stop.is_not(None))
    # Longest idle first (the newer of ready_at and last_used_at), so due rows lead the batch.
    since = sa.case(
        (sa.and_(_c.last_used_at.is_not(None), _c.last_used_at > _c.ready_at), _c.last_used_at),
        else_=_c.ready_at,
    )
    query = query.order_by(since, _c.id).limit(limit)
    return [repo.instance_from_mapping(row._mapping) for row in await conn.execute(query)]


async def interrupted_candidates(
    conn: AsyncConnection, *, now: datetime, limit: int
) -> list[Instance]:
    """`interrupted` instances whose next recovery step is due, not claimed by a policy worker."""
    query = (
        sa.select(instances)
        .where(
            _c.status == Status.INTERRUPTED.value,
            _claim_is_free(now),
            sa.or_(_c.recovery_next_at.is_(None), _c.recovery_next_at <= now),
        )
        .order_by(_c.recovery_next_at, _c.id)
        .limit(limit)
    )
    return [repo.instance_from_mapping(row._mapping) for row in await conn.execute(query)]


async def take_claim(
    conn: AsyncConnection,
    instance_id: str,
    *,
    status: Status,
    owner: str,
    now: datetime,
    ttl: float,
) -> bool:
    """Claim one instance for a policy decision if it still has `status` and nobody holds it."""
    result = await conn.execute(
        instances.update()
        .where(_c.id == instance_id, _c.status == status.value, _claim_is_free(now))
        .values(policy_claim_owner=owner, policy_claim_expires_at=now + timedelta(seconds=ttl))
    )
    return result.rowcount == 1


async def release_claim(conn: AsyncConnection, instance_id: str, *, owner: str) -> None:
    await conn.execute(
        instances.update()
        .where(_c.id == instance_id, _c.policy_claim_owner == owner)
        .values(policy_claim_owner=None, policy_claim_expires_at=None)
    )


async def mark_idle_noted(conn: AsyncConnection, instance_id: str, *, at: datetime) -> None:
    """Remember that a dry run recorded this idle period (recorded once per period)."""
    await conn.execute(instances.update().where(_c.id == instance_id).values(idle_noted_at=at))


async def set_recovery(
    conn: AsyncConnection,
    instance_id: str,
    *,
    attempts: int | None,
    started_at: datetime | None,
    next_at: datetime | None,
) -> None:
    """Write the recovery state of an interruption; all None ends (forgets) the recovery."""
    await conn.execute(
        instances.update()
        .where(_c.id == instance_id)
        .values(
            recovery_attempts=attempts,
            recovery_started_at=started_at,
            recovery_next_at=next_at,
        )
    )


async def link_replacement(
    conn: AsyncConnection, original_id: str, replacement_id: str, *, now: datetime
) -> None:
    """Link both ways and record it in both histories (`replacement_created` / `replaces`)."""
    await conn.execute(
        instances.update()
        .where(_c.id == original_id)
        .values(replaced_by_instance_id=replacement_id)
    )
    await conn.execute(
        instances.update().where(_c.id == replacement_id).values(replaces_instance_id=original_id)
    )
    await repo.append_note(
        conn,
        original_id,
        kind="replacement_created",
        source=EventSource.POLICY,
        now=now,
        reason="spot_interrupted",
        detail={"replacementId": replacement_id},
    )
    await repo.append_note(
        conn,
        replacement_id,
        kind="replaces",
        source=EventSource.POLICY,
        now=now,
        reason="spot_interrupted",
        detail={"originalId": original_id},
    )


# Client-changeable policy columns, by their API field name.
POLICY_COLUMNS = {"autoStop": "auto_stop", "onInterruption": "interruption_policy"}


async def set_policies(
    conn: AsyncConnection, instance_id: str, changes: Mapping[str, Any], *, now: datetime
) -> Instance:
    """Replace the given policies (API field names → JSON or None) and record a
    `policy_changed` event. Refused (409) on a deleted or failed instance."""
    current = await repo.get_instance(conn, instance_id, for_update=True)
    if current.is_terminal:
        raise IllegalTransitionError(instance_id, current.status.value, "policy_changed")
    if changes:
        values = {POLICY_COLUMNS[name]: value for name, value in changes.items()}
        # A new idle policy starts a new idle period for the dry run's once-per-period note.
        values.update(idle_noted_at=None, updated_at=now, version=current.version + 1)
        if "onInterruption" in changes:
            values["recovery_next_at"] = None  # a changed recovery applies at the next pass
        await conn.execute(
            instances.update()
            .where(_c.id == instance_id, _c.version == current.version)
            .values(**values)
        )
        await repo.append_note(
            conn,
            instance_id,
            kind="policy_changed",
            source=EventSource.API,
            now=now,
            detail=dict(changes),
        )
    return await repo.get_instance(conn, instance_id)


async def postpone(conn: AsyncConnection, instance_id: str, *, until: datetime) -> None:
    """Look at this interrupted instance again only from `until` (its recovery unchanged)."""
    await conn.execute(
        instances.update().where(_c.id == instance_id).values(recovery_next_at=until)
    )


async def unlink_failed_replacement(conn: AsyncConnection, original_id: str) -> None:
    """Forget a failed replacement on the original, so the next attempt makes a new one;
    the replacement keeps its `replaces_instance_id` and both histories keep the events."""
    await conn.execute(
        instances.update().where(_c.id == original_id).values(replaced_by_instance_id=None)
    )


@asynccontextmanager
async def claimed(
    database: Database,
    instance_id: str,
    *,
    status: Status,
    owner: str,
    now: datetime,
    ttl: float,
) -> AsyncIterator[bool]:
    """Hold the policy claim on one instance for the block (yields False if not taken)."""
    async with database.transaction() as conn:
        taken = await take_claim(conn, instance_id, status=status, owner=owner, now=now, ttl=ttl)
    try:
        yield taken
    finally:
        if taken:
            async with database.transaction() as conn:
                await release_claim(conn, instance_id, owner=owner)
