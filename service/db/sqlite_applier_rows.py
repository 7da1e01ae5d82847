"""The inbox applier's statements on SQLite, at the driver level.

A pass of the applier claims up to hundreds of webhooks, reads the instances they are
about, writes back the rows a report confirms and marks every event: four statements.
Through SQLAlchemy's compiled path each of them paid per row for parameter and result
processing (and for the ids of an `IN` list rendered into the statement), which was most
of the pass's cost and, on SQLite, time spent holding the one write lock the webhook
writer waits for. Here each is one SQL string given to the driver (`exec_driver_sql`,
so SQLAlchemy's connection, events and error wrapping still apply), and the only values
converted are the timestamps, through the columns' own SQLAlchemy processors, so rows read
and written here are those of the SQLAlchemy path (the applier's tests compare both).

`inbox.claim`/`inbox.mark` and `provider_facts.by_novita_id`/`write` call these on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from service.db.models import inbound_webhooks

# One processor per column type and dialect: the same function SQLAlchemy applies.
Processor = Callable[[Any], Any]


def _processors(dialect: Dialect) -> tuple[Processor, Processor]:
    """(read, write) of a UTC timestamp column on this dialect."""
    cached = _PROCESSORS.get(dialect.name)
    if cached is None:
        column_type = inbound_webhooks.c.received_at.type.dialect_impl(dialect)
        read = column_type.result_processor(dialect, None)
        write = column_type.bind_processor(dialect)
        assert read is not None and write is not None
        cached = _PROCESSORS[dialect.name] = (read, write)
    return cached


_PROCESSORS: dict[str, tuple[Processor, Processor]] = {}

_CLAIM = (
    "SELECT id, webhook_id, received_at, event_type, provider_instance_id, payload"
    " FROM inbound_webhooks WHERE processed_at IS NULL{ids} ORDER BY id LIMIT ?"
)


def claim(
    conn: sa.Connection, *, limit: int, ids: Sequence[int] | None
) -> list[tuple[int, str, datetime, str, str | None, str]]:
    """The oldest unapplied events (of `ids`, when given): id, webhook id, received at,
    type, provider instance id, payload text. SQLite has no row locks: the caller's
    write transaction is the lock."""
    read_time, _ = _processors(conn.dialect)
    only = f" AND id IN ({_integers(ids)})" if ids is not None else ""
    # fetchall(): one call to the driver for the batch, not one per row.
    rows = conn.exec_driver_sql(_CLAIM.format(ids=only), (limit,)).fetchall()
    return [
        (row_id, webhook_id, read_time(received), event_type, instance_id, payload)
        for row_id, webhook_id, received, event_type, instance_id, payload in rows
    ]


def mark(conn: sa.Connection, by_outcome: Mapping[str, Sequence[int]], *, now: datetime) -> None:
    """Stamp the events of each outcome processed at `now`: one UPDATE per outcome."""
    _, write_time = _processors(conn.dialect)
    stamp = write_time(now)
    for outcome, ids in by_outcome.items():
        conn.exec_driver_sql(
            "UPDATE inbound_webhooks SET processed_at = ?, outcome = ?"
            f" WHERE id IN ({_integers(ids)})",
            (stamp, outcome),
        )


# In no particular order: SQLite has no row locks to take in order (the write transaction
# is the lock), and sorting them cost a temporary B-tree per pass.
_FACTS = (
    "SELECT id, novita_instance_id, status, provider_status, provider_observed_at,"
    " updated_at, version FROM instances WHERE novita_instance_id IN ({marks})"
)


def facts(
    conn: sa.Connection, novita_ids: Sequence[str]
) -> list[tuple[str, str, str, str | None, datetime | None, datetime, int]]:
    """Our rows of the given Novita ids: id, Novita id, status, provider status, provider
    observed at, updated at, version."""
    read_time, _ = _processors(conn.dialect)
    marks = ",".join("?" * len(novita_ids))
    rows = conn.exec_driver_sql(_FACTS.format(marks=marks), tuple(novita_ids)).fetchall()
    return [
        (row_id, novita_id, status, provider_status, read_time(observed), read_time(updated), v)
        for row_id, novita_id, status, provider_status, observed, updated, v in rows
    ]


_WRITE = (
    "UPDATE instances SET provider_status = ?, provider_observed_at = ?, updated_at = ?,"
    " version = ? WHERE id = ? AND version = ?"
)


def write_facts(
    conn: sa.Connection,
    rows: Sequence[tuple[str, int, str | None, datetime | None, datetime, int]],
) -> int:
    """Each `(id, read version, provider status, provider observed at, updated at,
    version)` written over the version read, in one executemany; the rows changed."""
    _, write_time = _processors(conn.dialect)
    result = conn.exec_driver_sql(
        _WRITE,
        [
            (status, write_time(observed), write_time(updated), version, row_id, read_version)
            for row_id, read_version, status, observed, updated, version in rows
        ],
    )
    return result.rowcount


def _integers(ids: Sequence[int]) -> str:
    """Ids we read ourselves, written into the statement (binding hundreds one by one
    cost more than the statement); int() keeps anything else out."""
    return ",".join(str(int(row_id)) for row_id in ids)
