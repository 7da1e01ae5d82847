"""Instances, their event history and the outbox: all SQL for them, returning domain objects.

`change_status` is the single state-change function (docs/architecture.md): the new status, the
`instance_events` row and the outbox row are written in the caller's transaction, guarded
by the legal-transition table. The instance row is locked first (`FOR UPDATE` on
PostgreSQL; SQLite writers hold the database write lock from `BEGIN IMMEDIATE`), and the
per-instance event sequence is also protected by a unique constraint, so two concurrent
changes can neither lose an event nor interleave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service import intents
from service.db.engine import Database
from service.db.event_feed import event_from_row
from service.db.keyset import Page, page_of, page_query
from service.db.models import instance_events, instances, outbox
from service.domain import (
    TERMINAL_STATUSES,
    EventSource,
    Instance,
    InstanceEvent,
    InstanceSpec,
    OutboxMessage,
    Status,
    TransitionResult,
    is_legal_transition,
    new_event_id,
    new_instance_id,
)
from service.errors import IllegalTransitionError, InstanceNotFoundError
from service.notifications.messages import status_change_message

T = TypeVar("T")

# Columns a state change may also set (provider facts learnt along the way).
CHANGEABLE_COLUMNS = frozenset(
    {
        "novita_instance_id",
        "product_id",
        "product_name",
        "region",
        "price_per_hour",
        "port_mappings",
        "submitted_at",
        "last_used_at",
        "next_check_at",
        "image_url",
        "rootfs_size",
    }
)

# Timestamp columns stamped when an instance enters a status.
_STAMPS = {
    Status.RUNNING: "running_at",
    Status.READY: "ready_at",
    Status.STOPPED: "stopped_at",
    Status.DELETED: "deleted_at",
}
# A new run starts: earlier runs' running/ready times must not count for this one.
_NEW_RUN = frozenset({Status.PROVISIONING, Status.STARTING})


def _instance_from_row(row: sa.Row[Any]) -> Instance:
    return instance_from_mapping(row._mapping)


def instance_from_mapping(m: Mapping[Any, Any]) -> Instance:
    return Instance(
        id=m["id"],
        name=m["name"],
        status=Status(m["status"]),
        novita_instance_id=m["novita_instance_id"],
        provider_status=m["provider_status"],
        status_reason=m["status_reason"],
        product_id=m["product_id"],
        product_name=m["product_name"],
        region=m["region"],
        gpu_num=m["gpu_num"],
        rootfs_size=m["rootfs_size"],
        billing_mode=m["billing_mode"],
        price_per_hour=m["price_per_hour"],
        template_id=m["template_id"],
        image_url=m["image_url"],
        image_auth_id=m["image_auth_id"],
        preferred_region=m["preferred_region"],
        regions=tuple(m["regions"]),
        ports=tuple(m["ports"]),
        envs=tuple(m["envs"]),
        webhook_url=m["webhook_url"],
        labels=dict(m["labels"]),
        readiness=m["readiness"],
        auto_stop=m["auto_stop"],
        port_mappings=tuple(m["port_mappings"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        submitted_at=m["submitted_at"],
        running_at=m["running_at"],
        ready_at=m["ready_at"],
        stopped_at=m["stopped_at"],
        deleted_at=m["deleted_at"],
        last_used_at=m["last_used_at"],
        provider_observed_at=m["provider_observed_at"],
        next_check_at=m["next_check_at"],
        claim_owner=m["claim_owner"],
        claim_expires_at=m["claim_expires_at"],
        event_seq=m["event_seq"],
        version=m["version"],
        interruption_policy=m["interruption_policy"],
        recovery_attempts=m["recovery_attempts"] or 0,
        failed_attempts=m["failed_attempts"],
        next_probe_at=m["next_probe_at"],
        recovery_started_at=m["recovery_started_at"],
        recovery_next_at=m["recovery_next_at"],
        idle_noted_at=m["idle_noted_at"],
        replaces_instance_id=m["replaces_instance_id"],
        replaced_by_instance_id=m["replaced_by_instance_id"],
        action_intent=m["action_intent"],
        launch=m["launch"],
        team=m["team"],
    )


def _outbox_from_row(row: sa.Row[Any]) -> OutboxMessage:
    m = row._mapping
    return OutboxMessage(
        id=m["id"],
        instance_id=m["instance_id"],
        event_seq=m["event_seq"],
        type=m["type"],
        payload=dict(m["payload"]),
        target_url=m["target_url"],
        status=m["status"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        last_status_code=m["last_status_code"],
        last_error=m["last_error"],
        delivered_at=m["delivered_at"],
    )


async def insert_instance(
    conn: AsyncConnection,
    spec: InstanceSpec,
    *,
    now: datetime,
    source: EventSource = EventSource.API,
    instance_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> TransitionResult:
    """Record a new `pending` instance with its first event and `instance.created` outbox row
    (`detail` goes into that event: the API's key id)."""
    instance_id = instance_id or new_instance_id()
    row = (
        await conn.execute(
            instances.insert()
            .values(
                id=instance_id,
                name=spec.name,
                status=Status.PENDING.value,
                product_id=spec.product_id,
                product_name=spec.product_name,
                gpu_num=spec.gpu_num,
                rootfs_size=spec.rootfs_size,
                billing_mode=spec.billing_mode,
                template_id=spec.template_id,
                image_url=spec.image_url,
                image_auth_id=spec.image_auth_id,
                preferred_region=spec.region,
                regions=list(spec.regions),
                ports=list(spec.ports),
                envs=list(spec.envs),
                webhook_url=spec.webhook_url,
                labels=dict(spec.labels),
                readiness=spec.readiness,
                auto_stop=spec.auto_stop,
                interruption_policy=spec.on_interruption,
                launch=spec.launch,
                port_mappings=[],
                created_at=now,
                updated_at=now,
                next_check_at=now,
                event_seq=1,  # its `created` event, written below
                version=1,
                team=spec.team,
            )
            .returning(instances)
        )
    ).one()
    instance = _instance_from_row(row)
    event = await _record_event(
        conn,
        instance,
        None,
        Status.PENDING,
        source=source,
        kind="created",
        now=now,
        reason=None,
        provider_status=None,
        detail=dict(detail or {}),
    )
    return TransitionResult(instance=instance, event=event)


async def insert_adopted_instance(
    conn: AsyncConnection,
    instance_id: str,
    spec: InstanceSpec,
    *,
    path: Sequence[Status],
    now: datetime,
    facts: Mapping[str, Any],
    provider_status: str | None,
    observed_at: datetime,
    detail: Mapping[str, Any],
    reason: str | None = None,
) -> TransitionResult | None:
    """Record a provider instance that carries our id but had no row, under that id.

    It is written like any instance: `created` (pending), then `adopted` (provisioning, with
    the provider facts), then each further step of `path` (the legal way to the status
    Novita reports), each with its event and outbox row. None (nothing written) when a row
    with that id or that Novita id exists already.
    """
    if not path or path[0] is not Status.PROVISIONING:
        raise ValueError("an adopted instance's path starts at provisioning")
    novita_id = facts.get("novita_instance_id")
    taken = instances.c.id == instance_id
    if novita_id is not None:
        taken = sa.or_(taken, instances.c.novita_instance_id == novita_id)
    if (await conn.execute(sa.select(instances.c.id).where(taken).limit(1))).first():
        return None
    inserted = await insert_instance(
        conn, spec, now=now, source=EventSource.RECONCILER, instance_id=instance_id
    )
    result: TransitionResult | None = None
    for index, step in enumerate(path):
        # The row this transaction inserted (then changed) is its own until it commits.
        row = inserted.instance if result is None else result.instance
        result = await change_status(
            conn,
            instance_id,
            step,
            source=EventSource.RECONCILER,
            now=now,
            kind="adopted" if index == 0 else "status_changed",
            reason=reason if index == len(path) - 1 else None,
            provider_status=provider_status,
            observed_at=observed_at,
            detail=detail,
            changes=facts if index == 0 else None,
            locked=row,
        )
    assert result is not None
    return result


async def get_instance(
    conn: AsyncConnection, instance_id: str, *, for_update: bool = False
) -> Instance:
    query = sa.select(instances).where(instances.c.id == instance_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise InstanceNotFoundError.for_id(instance_id)
    return _instance_from_row(row)


async def find_instance(conn: AsyncConnection, id_or_novita_id: str) -> Instance | None:
    """Look an instance up by our id or by its Novita id."""
    row = (
        await conn.execute(
            sa.select(instances).where(
                sa.or_(
                    instances.c.id == id_or_novita_id,
                    instances.c.novita_instance_id == id_or_novita_id,
                )
            )
        )
    ).first()
    return _instance_from_row(row) if row is not None else None


async def find_instance_fast(database: Database, id_or_novita_id: str) -> Instance | None:
    """`find_instance` on the driver-level point reader when the database has one."""
    if database.point_reader is None:
        async with database.read() as conn:
            return await find_instance(conn, id_or_novita_id)
    row = await database.point_reader.find(id_or_novita_id)
    return instance_from_mapping(row) if row is not None else None


async def find_instance_derived(
    database: Database, id_or_novita_id: str, derive: Callable[[Instance], T]
) -> T | None:
    """`derive(instance)` for the instance found by `find_instance_fast`. On the point
    reader the result is reused while the stored row is unchanged (the row is still read
    every time), so `derive` must be a pure function of the instance, e.g. its JSON body."""
    if database.point_reader is None:
        instance = await find_instance_fast(database, id_or_novita_id)
        return None if instance is None else derive(instance)
    return await database.point_reader.find_derived(id_or_novita_id, derive, instance_from_mapping)


async def change_status(
    conn: AsyncConnection,
    instance_id: str,
    target: Status,
    *,
    source: EventSource,
    now: datetime,
    kind: str = "status_changed",
    reason: str | None = None,
    provider_status: str | None = None,
    observed_at: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
    locked: Instance | None = None,
) -> TransitionResult:
    """Move an instance to `target`, recording the event and the outbox row atomically.

    Four statements: lock and read the row, write it (`UPDATE ... RETURNING`, guarded by
    its version), insert the event, insert the notification; nothing is read back. A
    caller that has locked the row in this transaction already passes it as `locked` (as
    it read it, or as the last `change_status` returned it), and the read is skipped; a
    row changed since then fails the version guard instead of being overwritten.
    A change to the status the instance already has records no event: it only refreshes
    the provider facts given (`provider_status`, `observed_at`, `changes`). Raises
    `IllegalTransitionError` when the table forbids the move, `InstanceNotFoundError`
    when there is no such instance.
    """
    changes = dict(changes or {})
    unknown = set(changes) - CHANGEABLE_COLUMNS
    if unknown:
        raise ValueError(f"columns not changeable through change_status: {sorted(unknown)}")

    if locked is not None and locked.id != instance_id:
        raise ValueError(f"the locked row is {locked.id}, not {instance_id}")
    current = locked or await get_instance(conn, instance_id, for_update=True)
    values: dict[str, Any] = {**changes, "updated_at": now, "version": current.version + 1}
    if provider_status is not None:
        values["provider_status"] = provider_status
    if observed_at is not None and (
        current.provider_observed_at is None or observed_at > current.provider_observed_at
    ):
        values["provider_observed_at"] = observed_at

    if current.status == target:
        return TransitionResult(instance=await _update_instance(conn, current, values), event=None)
    if not is_legal_transition(current.status, target):
        raise IllegalTransitionError(instance_id, current.status.value, target.value)

    if intents.applicable(current.action_intent, target, now):
        # The change an action asked for: recorded as the asker's, whoever observed it.
        assert current.action_intent is not None
        fields = intents.event_fields(
            current.action_intent, source=source, kind=kind, reason=reason, detail=detail or {}
        )
        source, kind, reason, detail = fields.source, fields.kind, fields.reason, fields.detail
        values["action_intent"] = None
    values["status"] = target.value
    values["status_reason"] = reason
    values["event_seq"] = current.event_seq + 1
    if target in _NEW_RUN:
        values.update(running_at=None, ready_at=None, next_probe_at=None)
    if target in _STAMPS:
        values[_STAMPS[target]] = now
    if target in TERMINAL_STATUSES:
        values.update(next_check_at=None, claim_owner=None, claim_expires_at=None)
    elif "next_check_at" not in changes:
        values["next_check_at"] = now
    updated = await _update_instance(conn, current, values)
    event = await _record_event(
        conn,
        updated,
        current.status,
        target,
        source=source,
        kind=kind,
        now=now,
        reason=reason,
        provider_status=provider_status,
        detail=dict(detail or {}),
    )
    return TransitionResult(instance=updated, event=event)


async def set_action_intent(
    conn: AsyncConnection,
    instance_id: str,
    intent: Mapping[str, Any] | None,
    *,
    locked: Instance | None = None,
) -> None:
    """Store (or clear, with None) the action intent of an instance (see service.intents).

    A caller that has locked the row in this transaction already passes it as `locked`,
    as `change_status` takes it, and the read is skipped."""
    if locked is not None and locked.id != instance_id:
        raise ValueError(f"the locked row is {locked.id}, not {instance_id}")
    current = locked or await get_instance(conn, instance_id, for_update=True)
    if intent is None and current.action_intent is None:
        return
    await _update_instance(
        conn, current, {"action_intent": intent, "version": current.version + 1}
    )


async def _update_instance(
    conn: AsyncConnection, current: Instance, values: dict[str, Any]
) -> Instance:
    """Write `values` to the row read as `current` and return the row as written."""
    # The version guard is a second line of defence behind the row lock: a lost update
    # would show up here as a missing row instead of silently overwriting.
    row = (
        await conn.execute(
            instances.update()
            .where(instances.c.id == current.id, instances.c.version == current.version)
            .values(**values)
            .returning(instances)
        )
    ).first()
    if row is None:
        raise RuntimeError(f"instance {current.id} changed underneath a locked update")
    return _instance_from_row(row)


async def _record_event(
    conn: AsyncConnection,
    instance: Instance,
    from_status: Status | None,
    to_status: Status,
    *,
    source: EventSource,
    kind: str,
    now: datetime,
    reason: str | None,
    provider_status: str | None,
    detail: dict[str, Any],
) -> InstanceEvent:
    """The event and the outbox notification of a change already written to `instance`
    (whose `event_seq` is the new event's number): two INSERTs."""
    seq = instance.event_seq
    result = await conn.execute(
        instance_events.insert()
        .values(
            instance_id=instance.id,
            seq=seq,
            at=now,
            source=source.value,
            kind=kind,
            from_status=from_status.value if from_status else None,
            to_status=to_status.value,
            provider_status=provider_status,
            reason=reason,
            detail=detail,
        )
        .returning(instance_events)
    )
    event = event_from_row(result.one())
    message_type, payload = status_change_message(instance, to_status, reason, now)
    await conn.execute(
        outbox.insert().values(
            id=new_event_id(),
            instance_id=instance.id,
            event_seq=seq,
            type=message_type,
            payload=payload,
            target_url=instance.webhook_url,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    return event


async def list_events(
    conn: AsyncConnection, instance_id: str, *, after_seq: int = 0, limit: int = 100
) -> Page[InstanceEvent]:
    """A page of the instance's history, oldest first, starting after `after_seq`."""
    query = sa.select(instance_events).where(instance_events.c.instance_id == instance_id)
    query = page_query(query, [instance_events.c.seq], after=(after_seq,), limit=limit)
    events = [event_from_row(row) for row in await conn.execute(query)]
    return page_of(events, limit, lambda event: (event.seq,))


async def list_outbox(
    conn: AsyncConnection, *, instance_id: str | None = None, statuses: Sequence[str] = ()
) -> list[OutboxMessage]:
    query = sa.select(outbox).order_by(outbox.c.created_at, outbox.c.event_seq)
    if instance_id is not None:
        query = query.where(outbox.c.instance_id == instance_id)
    if statuses:
        query = query.where(outbox.c.status.in_(statuses))
    return [_outbox_from_row(row) for row in await conn.execute(query)]


async def append_note(
    conn: AsyncConnection,
    instance_id: str,
    *,
    kind: str,
    source: EventSource,
    now: datetime,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> InstanceEvent:
    """Record something that happened to an instance without changing its status (a start
    refused for lack of capacity, notifications disabled for its URL). It takes the next
    number of the instance's event sequence under the row lock, has no from/to status (it
    is not a transition), and queues no notification, so receivers see a gap in `sequence`.
    """
    current = await get_instance(conn, instance_id, for_update=True)
    seq = current.event_seq + 1
    await _update_instance(
        conn, current, {"event_seq": seq, "version": current.version + 1, "updated_at": now}
    )
    result = await conn.execute(
        instance_events.insert()
        .values(
            instance_id=instance_id,
            seq=seq,
            at=now,
            source=source.value,
            kind=kind,
            from_status=None,
            to_status=None,
            provider_status=None,
            reason=reason,
            detail=dict(detail or {}),
        )
        .returning(instance_events)
    )
    return event_from_row(result.one())


async def set_last_used(
    conn: AsyncConnection, instance_id: str, at: datetime, *, now: datetime
) -> Instance:
    """Record a heartbeat; an older heartbeat than the one stored changes nothing."""
    current = await get_instance(conn, instance_id, for_update=True)
    if current.last_used_at is not None and at <= current.last_used_at:
        return current
    return await _update_instance(
        conn, current, {"last_used_at": at, "updated_at": now, "version": current.version + 1}
    )


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    statuses: tuple[Status, ...] = ()
    region: str | None = None
    product: str | None = None
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    team: str | None = None  # None: every team


async def list_instances(
    conn: AsyncConnection,
    where: InstanceFilter,
    *,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> Page[Instance]:
    """A page, newest first, in the stable order (created_at, id) descending; `before` is
    the (created_at, id) of the last row of the previous page."""
    c = instances.c
    query = sa.select(instances)
    if where.statuses:
        query = query.where(c.status.in_([status.value for status in where.statuses]))
    if where.region is not None:
        query = query.where(c.region == where.region)
    if where.product is not None:
        query = query.where(sa.or_(c.product_name == where.product, c.product_id == where.product))
    if where.name is not None:
        query = query.where(c.name == where.name)
    for key, value in where.labels:
        query = query.where(c.labels[key].as_string() == value)
    if where.team is not None:
        query = query.where(c.team == where.team)
    query = page_query(query, [c.created_at, c.id], after=before, limit=limit, descending=True)
    found = [_instance_from_row(row) for row in await conn.execute(query)]
    return page_of(found, limit, lambda instance: (instance.created_at, instance.id))


async def ids_by_novita_id(conn: AsyncConnection, novita_ids: Sequence[str]) -> dict[str, str]:
    """Novita id → our id, for the given Novita ids that we know (one query)."""
    if not novita_ids:
        return {}
    rows = await conn.execute(
        sa.select(instances.c.novita_instance_id, instances.c.id).where(
            instances.c.novita_instance_id.in_(list(novita_ids))
        )
    )
    return {novita_id: instance_id for novita_id, instance_id in rows}
