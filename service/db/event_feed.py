"""Reading `instance_events` in the order of its id: the event stream's SQL.

The id is the event's place in the whole history (one sequence for every instance), so a
reader remembers one number and asks for what came after it. Each row comes with its
instance's labels, so streams can filter on them without a query per event.

On PostgreSQL ids are drawn from a sequence when a row is inserted, not when it commits:
a transaction may still commit id 10 after id 11 is visible. `event_writers` tells the
reader which transactions may still commit events, so a hole in the ids is waited for
until it can no longer fill (see `service.event_hub`). SQLite has one writer at a time, so every id
below a visible one is either visible or will never exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.models import instance_events, instances
from service.domain import EventSource, InstanceEvent, Status

_e = instance_events.c
_i = instances.c


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event of the stream, with what filters need to know of its instance."""

    event: InstanceEvent
    labels: dict[str, str]
    team: str = "default"

    @property
    def id(self) -> int:
        return self.event.id

    @property
    def instance_id(self) -> str:
        return self.event.instance_id


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """Which events a reader wants: any of `instance_ids` (empty: all), every one of
    `labels` on its instance, and a status it moved to among `statuses` (empty: all)."""

    instance_ids: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    statuses: tuple[Status, ...] = ()
    team: str | None = None  # None: every team's events

    def accepts(self, item: FeedEvent) -> bool:
        if self.team is not None and item.team != self.team:
            return False
        if self.instance_ids and item.instance_id not in self.instance_ids:
            return False
        if self.statuses and item.event.to_status not in self.statuses:
            return False
        return all(item.labels.get(key) == value for key, value in self.labels)


def event_from_row(row: sa.Row[Any]) -> InstanceEvent:
    """An `instance_events` row (any select that has its columns) as an `InstanceEvent`."""
    m = row._mapping
    return InstanceEvent(
        id=m["id"],
        instance_id=m["instance_id"],
        seq=m["seq"],
        at=m["at"],
        source=EventSource(m["source"]),
        kind=m["kind"],
        from_status=Status(m["from_status"]) if m["from_status"] else None,
        to_status=Status(m["to_status"]) if m["to_status"] else None,
        provider_status=m["provider_status"],
        reason=m["reason"],
        detail=dict(m["detail"]),
    )


def _feed_event(row: sa.Row[Any]) -> FeedEvent:
    m = row._mapping
    return FeedEvent(event_from_row(row), dict(m["labels"] or {}), m["team"])


def _query() -> sa.Select[Any]:
    return sa.select(instance_events, _i.labels, _i.team).select_from(
        instance_events.join(instances, _i.id == _e.instance_id)
    )


async def events_after(
    conn: AsyncConnection,
    after: int,
    *,
    limit: int,
    upto: int | None = None,
    where: FeedFilter | None = None,
) -> list[FeedEvent]:
    """Events with `after < id <= upto`, in id order, at most `limit`; filtered in SQL
    when `where` is given (the catch-up path reads long histories)."""
    query = _query().where(_e.id > after)
    if upto is not None:
        query = query.where(_e.id <= upto)
    if where is not None:
        if where.instance_ids:
            query = query.where(_e.instance_id.in_(where.instance_ids))
        if where.statuses:
            query = query.where(_e.to_status.in_([status.value for status in where.statuses]))
        for key, value in where.labels:
            query = query.where(_i.labels[key].as_string() == value)
        if where.team is not None:
            query = query.where(_i.team == where.team)
    rows = await conn.execute(query.order_by(_e.id).limit(limit))
    return [_feed_event(row) for row in rows]


async def last_event_id(conn: AsyncConnection) -> int:
    """The highest id in the history (0 when it is empty)."""
    value = await conn.scalar(sa.select(sa.func.max(_e.id)))
    return int(value or 0)


async def event_writers(conn: AsyncConnection) -> frozenset[str]:
    """PostgreSQL: the transactions (virtual ids) now able to commit `instance_events`
    rows: those holding the lock an INSERT takes on the table, from their first insert
    (before they draw an id) until they commit or roll back. Transactions elsewhere in
    the cluster, or that only read, do not count."""
    rows = await conn.execute(
        sa.text(
            "SELECT virtualtransaction FROM pg_locks "
            "WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' "
            "AND relation = CAST(:table AS regclass) "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"table": instance_events.name},
    )
    return frozenset(str(row[0]) for row in rows)
