"""All the SQL behind the reports (`service.reports`): the aggregation runs in the database,
so a report over millions of events ships back only its result rows.

Filters compare timestamps (so an index can serve them); interval arithmetic is done on
epoch seconds, spelled per dialect in `_epoch` (SQLite keeps UTC as text, PostgreSQL as
timestamptz). Dimension names are the ones the reports accept in `--group-by`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from service.db.engine import Database
from service.db.models import (
    OUTBOX_STATUSES,
    inbound_webhooks,
    instance_events,
    instances,
    outbox,
    webhook_tallies,
)
from service.db.webhook_tallies import minute_of
from service.domain import BILLING_STATUSES, Status
from service.percentiles import interpolate, neighbour_ranks

DAY_SECONDS = 86400
_BILLING = sorted(status.value for status in BILLING_STATUSES)
_UNIX_EPOCH_JULIAN_DAY = 2440587.5

_i = instances.c
_e = instance_events.c

# Instance attributes a report can group by (`status` and `day` are report-specific).
_INSTANCE_DIMENSIONS: dict[str, ColumnElement[Any]] = {
    "region": _i.region,
    "product": _i.product_name,
    "billing_mode": _i.billing_mode,
}

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [since, until), and the one team it covers (None: all)."""

    since: datetime
    until: datetime
    team: str | None = None


def _of_team(instance_id: ColumnElement[Any], team: str) -> ColumnElement[bool]:
    """Rows that belong to an instance of `team`."""
    return instance_id.in_(sa.select(_i.id).where(_i.team == team))


@asynccontextmanager
async def report_connection(database: Database) -> AsyncIterator[AsyncConnection]:
    """One consistent snapshot for all of a report's queries, and (on SQLite) run on a
    worker thread: a long scan must not block the event loop."""
    async with database.read() as conn:
        if _is_pg(conn):
            await conn.execution_options(isolation_level="REPEATABLE READ")
            # Sorts and hashes of a report stay in memory; LOCAL ends with the snapshot.
            await conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
        yield conn


# -- dialect helpers ---------------------------------------------------------------------


def _is_pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def _epoch(conn: AsyncConnection, column: ColumnElement[Any]) -> ColumnElement[float]:
    if _is_pg(conn):
        return sa.cast(sa.extract("epoch", column), sa.Float)
    # julianday() is float days: about 50 microseconds of noise, far below what reports show.
    return sa.type_coerce(
        (sa.func.julianday(column) - _UNIX_EPOCH_JULIAN_DAY) * DAY_SECONDS, sa.Float
    )


def _seconds_between(
    conn: AsyncConnection, start: ColumnElement[Any], end: ColumnElement[Any]
) -> ColumnElement[float]:
    if _is_pg(conn):
        return sa.cast(sa.extract("epoch", end - start), sa.Float)
    return sa.type_coerce(
        (sa.func.julianday(end) - sa.func.julianday(start)) * DAY_SECONDS, sa.Float
    )


def _greatest(conn: AsyncConnection, a: Any, b: Any) -> ColumnElement[float]:
    return sa.type_coerce((sa.func.greatest if _is_pg(conn) else sa.func.max)(a, b), sa.Float)


def _least(conn: AsyncConnection, a: Any, b: Any) -> ColumnElement[float]:
    return sa.type_coerce((sa.func.least if _is_pg(conn) else sa.func.min)(a, b), sa.Float)


def _day_of(conn: AsyncConnection, seconds: ColumnElement[Any]) -> ColumnElement[int]:
    """The UTC day number (days since 1970-01-01) of an epoch-seconds value (≥ 0)."""
    if _is_pg(conn):
        return sa.cast(sa.func.floor(seconds / DAY_SECONDS), sa.Integer)
    return sa.cast(seconds / DAY_SECONDS, sa.Integer)  # truncation = floor for t ≥ 0


def _as_float(value: ColumnElement[Any]) -> ColumnElement[float]:
    # Sums of Numeric columns come back as floats on both engines (no Decimal conversion).
    return sa.type_coerce(value, sa.Float)


def _in_window(column: ColumnElement[Any], window: Window) -> ColumnElement[bool]:
    return sa.and_(column >= window.since, column < window.until)


def _dimensions(names: Sequence[str], extra: dict[str, ColumnElement[Any]]) -> list[Any]:
    return [extra[name] if name in extra else _INSTANCE_DIMENSIONS[name] for name in names]


async def _rows(conn: AsyncConnection, query: sa.Executable) -> list[Row]:
    return [tuple(row) for row in await conn.execute(query)]


# -- fleet -------------------------------------------------------------------------------


async def fleet_counts(
    conn: AsyncConnection, dimensions: Sequence[str], *, team: str | None = None
) -> list[Row]:
    """Instances per group now, from their status column: (*dimensions, count)."""
    columns = _dimensions(dimensions, {"status": _i.status})
    query = sa.select(*columns, sa.func.count()).select_from(instances)
    if team is not None:
        query = query.where(_i.team == team)
    if columns:
        query = query.group_by(*columns)
    return await _rows(conn, query)


async def fleet_transitions(
    conn: AsyncConnection, dimensions: Sequence[str], *, at: datetime, team: str | None = None
) -> list[Row]:
    """Status changes up to `at` per group: (*dimensions, from_status, to_status, count).

    The instances in status X at `at` are those that entered X minus those that left it
    by then, so counting transitions per (from, to) pair rebuilds the fleet in one scan,
    with no per-instance "latest event" lookup. `dimensions` must not include `status`.
    """
    columns = _dimensions(dimensions, {})
    query = (
        sa.select(*columns, _e.from_status, _e.to_status, sa.func.count())
        .select_from(instance_events.join(instances, _i.id == _e.instance_id))
        .where(
            _e.at <= at,
            sa.or_(_e.from_status.is_(None), _e.from_status != _e.to_status),
        )
        .group_by(*columns, _e.from_status, _e.to_status)
    )
    if team is not None:
        query = query.where(_i.team == team)
    return await _rows(conn, query)


# -- usage -------------------------------------------------------------------------------


async def usage_edges(
    conn: AsyncConnection, dimensions: Sequence[str], window: Window, *, now: datetime
) -> list[Row]:
    """Billing-stretch edges per group and UTC day: (*dimensions, day, gpu_weight,
    gpu_offset, cost_weight, cost_offset); `service.reports.days` turns them into usage.

    A billing stretch starts with an event entering running/ready from a status that does
    not bill and ends with an event leaving them (or, still open, at `now`). Clipped to
    the window, its length is clamp(end) - clamp(start), so a group's usage is a signed
    sum over single events: ends +GPUs, starts -GPUs, no pairing of events needed. Per
    day the edges are summed as a weight (signed GPUs; x price for cost) and an offset
    (weight x seconds since that day's midnight). Instances without a recorded price
    count as zero cost.
    """
    since = window.since.timestamp()
    end = min(window.until, now).timestamp()
    billing = _BILLING
    starts = sa.and_(
        _e.to_status.in_(billing),
        sa.or_(_e.from_status.is_(None), _e.from_status.not_in(billing)),
    )
    ends = sa.and_(_e.from_status.in_(billing), _e.to_status.not_in(billing))
    clamped = _least(conn, _greatest(conn, _epoch(conn, _e.at), since), end)
    edges = sa.union_all(
        sa.select(
            _e.instance_id.label("instance_id"),
            sa.case((starts, -1), else_=1).label("sign"),
            clamped.label("x"),
        ).where(sa.or_(starts, ends)),
        # Still billing: the stretch is open and ends at min(now, until).
        sa.select(_i.id, sa.literal(1), sa.literal(end, sa.Float)).where(_i.status.in_(billing)),
    ).subquery("edges")
    day = _day_of(conn, edges.c.x)
    dated = sa.select(
        edges.c.instance_id,
        edges.c.sign,
        day.label("day"),
        (edges.c.x - day * DAY_SECONDS).label("offset"),
    ).subquery("dated")
    gpus = dated.c.sign * _i.gpu_num
    cost = gpus * sa.func.coalesce(_i.price_per_hour, 0)
    columns = [*_dimensions(dimensions, {}), dated.c.day]
    query = (
        sa.select(
            *columns,
            _as_float(sa.func.sum(gpus)),
            _as_float(sa.func.sum(gpus * dated.c.offset)),
            _as_float(sa.func.sum(cost)),
            _as_float(sa.func.sum(cost * dated.c.offset)),
        )
        .select_from(dated.join(instances, _i.id == dated.c.instance_id))
        .group_by(*columns)
    )
    if window.team is not None:
        query = query.where(_i.team == window.team)
    return await _rows(conn, query)


# -- provisioning ------------------------------------------------------------------------


async def provisioning_instances(
    conn: AsyncConnection, dimensions: Sequence[str], window: Window
) -> list[Row]:
    """One narrow row per instance requested (created) in the window: (*dimensions,
    status, failed, fallback, to_running, to_ready).

    failed: it has a `failed` event; fallback: None when no preferred region was asked
    for or it was never placed, else whether it was placed elsewhere; to_running/to_ready:
    seconds from the request to its first `running`/`ready` event, None if never.
    """
    placed = sa.and_(_i.region.is_not(None), _i.preferred_region.is_not(None))
    fallback = sa.case((placed, _i.region != _i.preferred_region))
    if _is_pg(conn):
        # One grouped pass over the milestone events, hash-joined to the instances.
        milestones = (
            sa.select(
                _e.instance_id,
                sa.func.min(sa.case((_e.to_status == Status.RUNNING.value, _e.at))).label(
                    "running"
                ),
                sa.func.min(sa.case((_e.to_status == Status.READY.value, _e.at))).label("ready"),
                sa.func.bool_or(_e.to_status == Status.FAILED.value).label("failed"),
            )
            .where(
                _e.to_status.in_([Status.RUNNING.value, Status.READY.value, Status.FAILED.value])
            )
            .group_by(_e.instance_id)
            .subquery("milestones")
        )
        m = milestones.c
        query = sa.select(
            *_dimensions(dimensions, {}),
            _i.status,
            sa.func.coalesce(m.failed, False),
            fallback,
            _seconds_between(conn, _i.created_at, m.running),
            _seconds_between(conn, _i.created_at, m.ready),
        ).select_from(instances.outerjoin(milestones, m.instance_id == _i.id))
    else:
        # SQLite: three probes of (instance_id, to_status, at) per instance beat a grouped
        # scan that would fetch every milestone row from the table.
        query = sa.select(
            *_dimensions(dimensions, {}),
            _i.status,
            _first_at(Status.FAILED).is_not(None),
            fallback,
            _seconds_between(conn, _i.created_at, _first_at(Status.RUNNING)),
            _seconds_between(conn, _i.created_at, _first_at(Status.READY)),
        )
    if window.team is not None:
        query = query.where(_i.team == window.team)
    return await _rows(conn, query.where(_in_window(_i.created_at, window)))


def _first_at(status: Status) -> ColumnElement[Any]:
    """Time of the instance's first event into `status`, as a correlated subquery."""
    event = instance_events.alias(f"first_{status.value}")
    return (
        sa.select(sa.func.min(event.c.at))
        .where(event.c.instance_id == _i.id, event.c.to_status == status.value)
        .scalar_subquery()
    )


async def capacity_errors(conn: AsyncConnection, window: Window) -> list[Row]:
    """Capacity refusals per (region, product_id, product_name, count), from the provisioner's
    events in the window: `capacityAttempts` of a successful create (the regions it fell
    back from) and `attempts` of a `no_capacity` failure."""
    if _is_pg(conn):
        sql = """
            SELECT a ->> 'region', a ->> 'productId', a ->> 'productName', count(*)
            FROM instance_events e
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN e.to_status = 'failed' THEN e.detail -> 'attempts'
                     ELSE e.detail -> 'capacityAttempts' END) AS a
            WHERE e.source = 'provisioner' AND e.at >= :since AND e.at < :until
              AND (e.to_status = 'provisioning'
                   OR (e.to_status = 'failed' AND e.reason = 'no_capacity'))
              AND jsonb_typeof(CASE WHEN e.to_status = 'failed' THEN e.detail -> 'attempts'
                                    ELSE e.detail -> 'capacityAttempts' END) = 'array'
              {team}
            GROUP BY 1, 2, 3
        """
    else:
        sql = """
            SELECT json_extract(a.value, '$.region'), json_extract(a.value, '$.productId'),
                   json_extract(a.value, '$.productName'), count(*)
            FROM instance_events e, json_each(e.detail,
                CASE WHEN e.to_status = 'failed' THEN '$.attempts'
                     ELSE '$.capacityAttempts' END) AS a
            WHERE e.source = 'provisioner' AND e.at >= :since AND e.at < :until
              AND (e.to_status = 'provisioning'
                   OR (e.to_status = 'failed' AND e.reason = 'no_capacity'))
              {team}
            GROUP BY 1, 2, 3
        """
    binds = [
        sa.bindparam("since", window.since, type_=instance_events.c.at.type),
        sa.bindparam("until", window.until, type_=instance_events.c.at.type),
    ]
    if window.team is not None:
        sql = sql.format(team="AND e.instance_id IN (SELECT id FROM instances WHERE team = :team)")
        binds.append(sa.bindparam("team", window.team, type_=sa.String))
    else:
        sql = sql.format(team="")
    query = sa.text(sql).bindparams(*binds)
    return await _rows(conn, query)


async def failure_reasons(conn: AsyncConnection, window: Window) -> list[Row]:
    """Transitions into `failed` in the window per reason: (reason, count)."""
    query = (
        sa.select(_e.reason, sa.func.count())
        .where(
            _in_window(_e.at, window),
            _e.to_status == Status.FAILED.value,
            sa.func.coalesce(_e.from_status, "") != Status.FAILED.value,
        )
        .group_by(_e.reason)
    )
    if window.team is not None:
        query = query.where(_of_team(_e.instance_id, window.team))
    return await _rows(conn, query)


# -- reliability -------------------------------------------------------------------------


async def webhook_outcomes(conn: AsyncConnection, window: Window) -> list[Row]:
    """Webhooks stored in the window per applier outcome (None = not applied yet)."""
    c = inbound_webhooks.c
    query = (
        sa.select(c.outcome, sa.func.count())
        .where(_in_window(c.received_at, window))
        .group_by(c.outcome)
    )
    return await _rows(conn, query)


async def webhook_tallies_by_outcome(conn: AsyncConnection, window: Window) -> list[Row]:
    """Duplicate and rejected webhooks per outcome, to the minute: (outcome, count)."""
    c = webhook_tallies.c
    query = (
        sa.select(c.outcome, sa.func.sum(c.count))
        .where(c.minute >= minute_of(window.since), c.minute < window.until)
        .group_by(c.outcome)
    )
    return await _rows(conn, query)


async def state_changes_by_source(conn: AsyncConnection, window: Window) -> list[Row]:
    """Status changes in the window per source (notes that keep the status are left out)."""
    query = (
        sa.select(_e.source, sa.func.count())
        .where(
            _in_window(_e.at, window),
            sa.or_(_e.from_status.is_(None), _e.from_status != _e.to_status),
        )
        .group_by(_e.source)
    )
    if window.team is not None:
        query = query.where(_of_team(_e.instance_id, window.team))
    return await _rows(conn, query)


async def notification_summary(
    conn: AsyncConnection, window: Window, quantiles: Sequence[float]
) -> tuple[dict[str, int], list[float | None]]:
    """Notifications created in the window per delivery status, and percentiles (linear
    interpolation) of delivered_at - created_at in seconds over the delivered ones (None
    each when none was delivered)."""
    c = outbox.c
    latency = _seconds_between(conn, c.created_at, c.delivered_at)
    is_delivered = sa.and_(c.status == "delivered", c.delivered_at.is_not(None))
    # `status IN (all of them)` filters nothing; it lets the planner read the
    # (status, created_at, delivered_at) index alone instead of the outbox rows.
    in_window = sa.and_(c.status.in_(OUTBOX_STATUSES), _in_window(c.created_at, window))
    if window.team is not None:
        in_window = sa.and_(in_window, _of_team(c.instance_id, window.team))
    if _is_pg(conn):
        spread = (
            sa.func.percentile_cont(postgresql.array(list(quantiles)))
            .within_group(latency)
            .filter(is_delivered)
        )
        rows = await conn.execute(
            sa.select(c.status, sa.func.count(), sa.type_coerce(spread, postgresql.ARRAY(sa.Float)))
            .where(in_window)
            .group_by(c.status)
        )
        counts, found = {}, None
        for status, count, values in rows:
            counts[status] = int(count)
            found = values if values is not None else found
        return counts, [None if v is None else float(v) for v in (found or [None] * len(quantiles))]
    rows = await conn.execute(
        sa.select(c.status, sa.func.count(), sa.func.count(c.delivered_at))
        .where(in_window)
        .group_by(c.status)
    )
    counts, delivered = {}, 0
    for status, count, with_time in rows:
        counts[status] = int(count)
        delivered += int(with_time) if status == "delivered" else 0
    if delivered == 0:
        return counts, [None for _ in quantiles]
    # No percentile function in SQLite: number the sorted latencies once and read the
    # ranks around each quantile.
    wanted = {rank for q in quantiles for rank in neighbour_ranks(delivered, q)}
    latencies = sa.select(latency.label("latency")).where(in_window, is_delivered).subquery()
    ranked = sa.select(
        latencies.c.latency,
        sa.func.row_number().over(order_by=latencies.c.latency).label("rank"),
    ).subquery("ranked")
    by_rank = {
        int(rank): float(value)
        for rank, value in await conn.execute(
            sa.select(ranked.c.rank, ranked.c.latency).where(ranked.c.rank.in_(sorted(wanted)))
        )
    }
    result: list[float | None] = []
    for q in quantiles:
        low, high = neighbour_ranks(delivered, q)
        result.append(interpolate(by_rank[low], by_rank[high], delivered, q))
    return counts, result
