"""The inbox finds its unprocessed webhooks through a partial index of their ids (revision
0011), on SQLite and PostgreSQL: rows stored before the migration, processed or not, keep
their meaning after it (and after going back down), and the applier's writes of a batch
are one statement each on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from service.clock import ManualClock
from service.db import inbox, provider_facts
from service.db.engine import Database
from service.db.migrations import alembic_config, upgrade_to_head
from service.db.models import inbound_webhooks
from tests.support.provisioning import add_instance
from tests.support.statements import sent_statements

T0 = datetime(2026, 12, 1, tzinfo=UTC)
# (id, webhook id, received minutes after T0, processed minutes after T0, outcome)
STORED = [
    (1, "msg_a", 0, 1, "unchanged"),
    (2, "msg_b", 1, None, None),
    (3, "msg_c", 2, 3, "unknown_instance"),
    (4, "msg_d", 3, None, None),
    (5, "msg_e", 4, 5, "applied"),
]
UNPROCESSED = [2, 4]


async def migrate(database: Database, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and revision < current:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with database.engine.begin() as conn:
        await conn.run_sync(run)


def at(minutes: float | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


async def store_rows_at_0010(database: Database) -> None:
    """The rows as a service at revision 0010 left them (plain SQL of that schema)."""
    await migrate(database, "0010")
    async with database.engine.begin() as conn:
        for row_id, webhook_id, received, processed, outcome in STORED:
            await conn.execute(
                inbound_webhooks.insert().values(
                    id=row_id,
                    webhook_id=webhook_id,
                    received_at=at(received),
                    event_type="instance.status_changed",
                    provider_instance_id="n1",
                    payload={"type": "instance.status_changed", "data": {"status": "running"}},
                    processed_at=at(processed),
                    outcome=outcome,
                )
            )


async def index_names(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("inbound_webhooks"))
    return {index["name"] for index in indexes if index["name"]}


async def claimed_ids(database: Database) -> list[int]:
    async with database.transaction() as conn:
        return [event.id for event in await inbox.claim_unprocessed(conn, limit=10)]


async def test_rows_stored_before_the_migration_keep_their_meaning(
    empty_database: Database,
) -> None:
    database = empty_database
    await store_rows_at_0010(database)
    assert "ix_inbound_webhooks_processed_at_id" in await index_names(database)

    await upgrade_to_head(database.engine)
    names = await index_names(database)
    assert "ix_inbound_webhooks_unprocessed" in names
    assert "ix_inbound_webhooks_processed_at_id" not in names

    # The applier claims exactly the unprocessed rows, oldest first; the backlog counts them.
    assert await claimed_ids(database) == UNPROCESSED
    async with database.read() as conn:
        assert await inbox.backlog(conn) == (2, at(1))
    # Retention deletes processed rows only, whatever their age.
    async with database.transaction() as conn:
        pruned = await inbox.prune(conn, received_before=T0 + timedelta(days=1), limit=10)
    assert pruned == 3
    assert await claimed_ids(database) == UNPROCESSED


async def test_marked_rows_leave_the_claim_and_going_down_keeps_every_row(
    empty_database: Database,
) -> None:
    database = empty_database
    await store_rows_at_0010(database)
    await upgrade_to_head(database.engine)
    async with database.transaction() as conn:
        await conn.run_sync(lambda sync: inbox.mark(sync, {2: "applied"}, now=at(10)))
    assert await claimed_ids(database) == [4]

    await migrate(database, "0010")
    assert "ix_inbound_webhooks_unprocessed" not in await index_names(database)
    async with database.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    inbound_webhooks.c.id,
                    inbound_webhooks.c.processed_at,
                    inbound_webhooks.c.outcome,
                ).order_by(inbound_webhooks.c.id)
            )
        ).all()
    expected = {row_id: (at(processed), outcome) for row_id, _, _, processed, outcome in STORED}
    expected[2] = (at(10), "applied")
    assert {row.id: (row.processed_at, row.outcome) for row in rows} == expected


async def test_marking_a_batch_stamps_each_row_with_its_own_outcome(database: Database) -> None:
    async with database.transaction() as conn:
        for row_id, webhook_id, received, _, _ in STORED:
            await conn.execute(
                inbound_webhooks.insert().values(
                    id=row_id,
                    webhook_id=webhook_id,
                    received_at=at(received),
                    event_type="instance.status_changed",
                    payload={},
                )
            )
    outcomes = {1: "unchanged", 3: "unknown_instance", 5: "applied", 4: "unchanged"}
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            await conn.run_sync(lambda sync: inbox.mark(sync, outcomes, now=at(20)))
    assert sent == (["UPDATE"] if database.dialect == "postgresql" else ["UPDATE"] * 3)
    async with database.read() as conn:
        rows = (await conn.execute(sa.select(inbound_webhooks))).all()
    assert {row.id: (row.processed_at, row.outcome) for row in rows} == {
        1: (at(20), "unchanged"),
        2: (None, None),
        3: (at(20), "unknown_instance"),
        4: (at(20), "unchanged"),
        5: (at(20), "applied"),
    }
    assert await claimed_ids(database) == [2]


@pytest.mark.parametrize("moved", [False, True])
async def test_a_batch_of_provider_facts_is_written_over_the_versions_read(
    database: Database, moved: bool
) -> None:
    clock = ManualClock(T0)
    ids = [await add_instance(database, clock) for _ in range(3)]
    novita_ids = [f"n{n}" for n in range(3)]
    async with database.transaction() as conn:
        for our_id, novita_id in zip(ids, novita_ids, strict=True):
            await conn.execute(
                sa.text("UPDATE instances SET novita_instance_id = :n WHERE id = :i"),
                {"n": novita_id, "i": our_id},
            )
    async with database.transaction() as conn:
        rows = await conn.run_sync(
            lambda sync: provider_facts.by_novita_id(sync, novita_ids, for_update=True)
        )
    if moved:  # someone else wrote one of the rows since it was read
        async with database.transaction() as conn:
            await conn.execute(
                sa.text("UPDATE instances SET version = version + 1 WHERE id = :i"),
                {"i": ids[1]},
            )
    seen = T0 + timedelta(minutes=5)
    changed = [
        (
            row.version,
            provider_facts.ProviderFacts(
                row.id,
                row.novita_instance_id,
                row.status,
                "running",
                seen,
                seen,
                row.version + 1,
            ),
        )
        for row in rows.values()
    ]
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            if moved:
                with pytest.raises(RuntimeError, match="changed underneath"):
                    await conn.run_sync(lambda sync: provider_facts.write(sync, changed))
            else:
                await conn.run_sync(lambda sync: provider_facts.write(sync, changed))
    if database.dialect == "postgresql":
        assert sent == ["UPDATE"]
    if moved:
        return
    async with database.read() as conn:
        after = await conn.run_sync(lambda sync: provider_facts.by_novita_id(sync, novita_ids))
    for read_version, facts in changed:
        stored = after[facts.novita_instance_id]
        assert (stored.provider_status, stored.provider_observed_at, stored.updated_at) == (
            "running",
            seen,
            seen,
        )
        assert stored.version == read_version + 1
