"""What the applier of a batch of webhooks reads and writes of each instance: its status
and what Novita last said of it, read for a whole batch in one query and written back for
a whole batch in one executemany. Synchronous, like the applier's pass that uses them
(`AsyncConnection.run_sync`, or a thread of its own on a SQLite file).

A webhook that only confirms an instance's status (most of them) changes nothing but these
columns; reading the whole row for each (JSON columns and all) cost more than the rest of
applying it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.db import sqlite_applier_rows
from service.db.models import instances
from service.domain import TERMINAL_STATUSES, Status


@dataclass(frozen=True, slots=True)
class ProviderFacts:
    id: str
    novita_instance_id: str
    status: Status
    provider_status: str | None
    provider_observed_at: datetime | None
    updated_at: datetime
    version: int

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


# Status by its stored value: a dictionary lookup, where `Status(value)` goes through
# the Enum machinery for each row (an unknown value still raises, as KeyError).
_STATUS = {status.value: status for status in Status}

_COLUMNS = (
    instances.c.id,
    instances.c.novita_instance_id,
    instances.c.status,
    instances.c.provider_status,
    instances.c.provider_observed_at,
    instances.c.updated_at,
    instances.c.version,
)


_PG_READ = """
SELECT id, novita_instance_id, status, provider_status, provider_observed_at, updated_at,
    version
FROM instances WHERE novita_instance_id = ANY($1::text[]) ORDER BY id"""


def by_novita_id(
    conn: sa.Connection, novita_ids: Sequence[str], *, for_update: bool = False
) -> dict[str, ProviderFacts]:
    """Novita id → the facts of our row, for the given Novita ids that we know (one query;
    with `for_update`, the rows are locked, in the order of our ids)."""
    if not novita_ids:
        return {}
    if conn.dialect.name == "sqlite":  # no row locks: the write transaction is the lock
        rows = sqlite_applier_rows.facts(conn, novita_ids)
        return {
            novita_id: ProviderFacts(row_id, novita_id, _STATUS[status], provider, seen, at, v)
            for row_id, novita_id, status, provider, seen, at, v in rows
        }
    read: Iterable[Sequence[Any]]
    if conn.dialect.name == "postgresql":
        # The driver's own statement (one array parameter, so one prepared statement
        # whatever the number of ids), its rows without SQLAlchemy's per-row processing.
        sql = _PG_READ + (" FOR UPDATE" if for_update else "")
        read = conn.exec_driver_sql(sql, (list(novita_ids),))
    else:
        query = (
            sa.select(*_COLUMNS)
            .where(instances.c.novita_instance_id.in_(list(novita_ids)))
            .order_by(instances.c.id)
        )
        read = conn.execute(query.with_for_update() if for_update else query)
    found = {}
    for row_id, novita_id, status, *facts in read:
        found[novita_id] = ProviderFacts(row_id, novita_id, Status(status), *facts)
    return found


# PostgreSQL: the whole batch in one statement, its rows as arrays joined through `unnest`
# (an executemany is one statement run per row, each costing the server its own start).
_PG_WRITE = """
UPDATE instances SET provider_status = batch.provider_status,
    provider_observed_at = batch.provider_observed_at, updated_at = batch.updated_at,
    version = batch.version
FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int[])
    AS batch (row_id, row_version, provider_status, provider_observed_at, updated_at, version)
WHERE instances.id = batch.row_id AND instances.version = batch.row_version
"""


def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


def write(conn: sa.Connection, changed: Sequence[tuple[int, ProviderFacts]]) -> None:
    """Write each row's facts over the version it had when read, `(read version, facts)`,
    in one statement on PostgreSQL, one executemany on SQLite (status is not written: it
    has not changed)."""
    if not changed:
        return
    if conn.dialect.name == "sqlite":
        written = sqlite_applier_rows.write_facts(
            conn,
            [
                (
                    facts.id,
                    read_version,
                    facts.provider_status,
                    facts.provider_observed_at,
                    facts.updated_at,
                    facts.version,
                )
                for read_version, facts in changed
            ],
        )
        if written != len(changed):
            raise RuntimeError("an instance changed underneath a locked batch")
        return
    facts = [facts for _, facts in changed]
    result = conn.exec_driver_sql(
        _PG_WRITE,
        (
            [row.id for row in facts],
            [read_version for read_version, _ in changed],
            [row.provider_status for row in facts],
            [_as_utc(row.provider_observed_at) for row in facts],
            [_as_utc(row.updated_at) for row in facts],
            [row.version for row in facts],
        ),
    )
    # The caller holds the rows locked: a version that moved would be a bug, not a race
    # (-1: the driver does not count the rows of an executemany).
    if result.rowcount not in (-1, len(changed)):
        raise RuntimeError("an instance changed underneath a locked batch")
