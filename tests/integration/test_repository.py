"""The store's contract, on SQLite and PostgreSQL: instances, the single state-change
function, the event history and the outbox rows it writes."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from decimal import Decimal

import pytest

from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Status
from service.errors import IllegalTransitionError, InstanceNotFoundError
from tests.plugins.database import OpenDatabase
from tests.support.instance_rows import T0, create


async def move(database: Database, instance_id: str, target: Status, minutes: int = 1) -> None:
    async with database.transaction() as conn:
        await repo.change_status(
            conn,
            instance_id,
            target,
            source=EventSource.RECONCILER,
            now=T0 + timedelta(minutes=minutes),
        )


async def test_new_instance_is_pending_with_created_event_and_outbox(database: Database) -> None:
    instance_id = await create(database)
    async with database.read() as conn:
        instance = await repo.get_instance(conn, instance_id)
        events = (await repo.list_events(conn, instance_id)).items
        messages = await repo.list_outbox(conn, instance_id=instance_id)

    assert instance.status is Status.PENDING
    assert instance.created_at == T0 and instance.created_at.tzinfo is not None
    assert instance.labels == {"team": "vision"}
    assert [(e.seq, e.from_status, e.to_status, e.kind) for e in events] == [
        (1, None, Status.PENDING, "created")
    ]
    assert [(m.type, m.event_seq, m.status) for m in messages] == [
        ("instance.created", 1, "pending")
    ]
    assert messages[0].target_url == "https://hooks.example.com/novita"
    assert messages[0].payload["data"]["id"] == instance_id
    assert "hf_secret" not in str(messages[0].payload), "env values must never reach payloads"


async def test_transitions_record_events_outbox_and_timestamps(database: Database) -> None:
    instance_id = await create(database)
    async with database.transaction() as conn:
        await repo.change_status(
            conn,
            instance_id,
            Status.PROVISIONING,
            source=EventSource.PROVISIONER,
            now=T0 + timedelta(seconds=5),
            provider_status="pending",
            changes={
                "novita_instance_id": "a1b2c3d4e5f60718",
                "region": "AS-SGP-02",
                "price_per_hour": Decimal("0.35"),
            },
            detail={"attempts": 1},
        )
    await move(database, instance_id, Status.RUNNING, minutes=2)
    await move(database, instance_id, Status.READY, minutes=3)

    async with database.read() as conn:
        instance = await repo.get_instance(conn, instance_id)
        by_novita_id = await repo.find_instance(conn, "a1b2c3d4e5f60718")
        events = (await repo.list_events(conn, instance_id)).items
        messages = await repo.list_outbox(conn, instance_id=instance_id)

    assert instance.status is Status.READY
    assert instance.price_per_hour == Decimal("0.35")
    assert instance.running_at == T0 + timedelta(minutes=2)
    assert instance.ready_at == T0 + timedelta(minutes=3)
    assert by_novita_id is not None and by_novita_id.id == instance_id
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, Status.PENDING),
        (Status.PENDING, Status.PROVISIONING),
        (Status.PROVISIONING, Status.RUNNING),
        (Status.RUNNING, Status.READY),
    ]
    assert events[1].detail == {"attempts": 1} and events[1].provider_status == "pending"
    assert [m.type for m in messages] == [
        "instance.created",
        "instance.provisioning",
        "instance.running",
        "instance.ready",
    ]
    assert [m.payload["data"]["sequence"] for m in messages] == [1, 2, 3, 4]
    assert messages[-1].payload["data"]["status"] == "ready"


async def test_illegal_transition_is_refused_and_writes_nothing(database: Database) -> None:
    instance_id = await create(database)
    with pytest.raises(IllegalTransitionError) as refused:
        async with database.transaction() as conn:
            await repo.change_status(
                conn, instance_id, Status.READY, source=EventSource.API, now=T0
            )
    assert (refused.value.current, refused.value.requested) == ("pending", "ready")
    async with database.read() as conn:
        assert (await repo.get_instance(conn, instance_id)).status is Status.PENDING
        assert len((await repo.list_events(conn, instance_id)).items) == 1
        assert len(await repo.list_outbox(conn, instance_id=instance_id)) == 1


async def test_terminal_statuses_accept_no_further_moves(database: Database) -> None:
    instance_id = await create(database)
    await move(database, instance_id, Status.DELETING)
    await move(database, instance_id, Status.DELETED, minutes=2)
    async with database.read() as conn:
        instance = await repo.get_instance(conn, instance_id)
    assert instance.deleted_at == T0 + timedelta(minutes=2)
    assert instance.next_check_at is None, "terminal instances are no longer polled"
    for target in Status:
        if target is Status.DELETED:
            continue
        with pytest.raises(IllegalTransitionError):
            await move(database, instance_id, target, minutes=3)


async def test_same_status_records_provider_facts_without_an_event(database: Database) -> None:
    instance_id = await create(database)
    await move(database, instance_id, Status.PROVISIONING)
    observed = T0 + timedelta(minutes=4)
    async with database.transaction() as conn:
        result = await repo.change_status(
            conn,
            instance_id,
            Status.PROVISIONING,
            source=EventSource.WEBHOOK,
            now=observed,
            provider_status="pulling",
            observed_at=observed,
        )
    assert result.event is None
    assert result.instance.provider_status == "pulling"
    assert result.instance.provider_observed_at == observed
    async with database.read() as conn:
        assert len((await repo.list_events(conn, instance_id)).items) == 2


async def test_a_new_run_forgets_the_previous_runs_ready_time(database: Database) -> None:
    instance_id = await create(database)
    for minute, target in enumerate(
        [
            Status.PROVISIONING,
            Status.RUNNING,
            Status.READY,
            Status.STOPPING,
            Status.STOPPED,
            Status.STARTING,
        ],
        start=1,
    ):
        await move(database, instance_id, target, minutes=minute)
    async with database.read() as conn:
        instance = await repo.get_instance(conn, instance_id)
    assert instance.ready_at is None and instance.running_at is None
    assert instance.stopped_at == T0 + timedelta(minutes=5)


async def test_unknown_instance_is_reported_as_not_found(database: Database) -> None:
    with pytest.raises(InstanceNotFoundError):
        await move(database, "inst_missing", Status.PROVISIONING)
    async with database.read() as conn:
        assert await repo.find_instance(conn, "inst_missing") is None


# Each worker moves the instance one step around this cycle from wherever it currently is.
CYCLE = {
    Status.PENDING: Status.PROVISIONING,
    Status.PROVISIONING: Status.RUNNING,
    Status.RUNNING: Status.READY,
    Status.READY: Status.STOPPING,
    Status.STOPPING: Status.STOPPED,
    Status.STOPPED: Status.STARTING,
    Status.STARTING: Status.RUNNING,
}


async def test_concurrent_changes_keep_a_complete_ordered_history(database: Database) -> None:
    instance_id = await create(database)
    workers = 24

    async def step(n: int) -> None:
        async with database.transaction() as conn:
            current = await repo.get_instance(conn, instance_id, for_update=True)
            await repo.change_status(
                conn,
                instance_id,
                CYCLE[current.status],
                source=EventSource.RECONCILER,
                now=T0 + timedelta(seconds=n),
            )

    await asyncio.gather(*(step(n) for n in range(workers)))

    async with database.read() as conn:
        events = (await repo.list_events(conn, instance_id, limit=1000)).items
        messages = await repo.list_outbox(conn, instance_id=instance_id)
        instance = await repo.get_instance(conn, instance_id)
    assert [e.seq for e in events] == list(range(1, workers + 2)), "no event lost or duplicated"
    for before, after in itertools.pairwise(events):
        assert after.from_status == before.to_status, "each change starts where the last ended"
    assert instance.status == events[-1].to_status
    assert instance.event_seq == workers + 1
    assert len(messages) == workers + 1


async def test_point_reader_returns_exactly_what_the_sqlalchemy_path_returns(
    database_url: str, open_database: OpenDatabase
) -> None:
    """The driver-level point read decodes every column type the same way."""
    from service.db.migrations import upgrade_to_head

    database = open_database(database_url)
    await upgrade_to_head(database.engine)
    instance_id = await create(database)
    async with database.transaction() as conn:
        await repo.change_status(
            conn, instance_id, Status.PROVISIONING, source=EventSource.PROVISIONER,
            now=T0 + timedelta(seconds=5, microseconds=123456),
            changes={"novita_instance_id": "0123456789abcdef",
                     "price_per_hour": Decimal("0.35"),
                     "port_mappings": [{"port": 8888, "endpoint": "http://x", "type": "http"}]},
        )
    async with database.read() as conn:
        expected = await repo.find_instance(conn, instance_id)
    assert database.point_reader is not None
    by_id = await repo.find_instance_fast(database, instance_id)
    by_novita_id = await repo.find_instance_fast(database, "0123456789abcdef")
    assert by_id == expected and by_novita_id == expected
    assert await repo.find_instance_fast(database, "inst_missing") is None


@pytest.mark.postgres
async def test_ssl_require_in_the_url_refuses_a_server_without_tls_on_every_path(
    postgres_url: str, open_database: OpenDatabase
) -> None:
    """`?ssl=require` reaches asyncpg as SQLAlchemy reads it: the test server speaks no
    TLS, so no path may quietly fall back to a plaintext connection."""
    from service.db.inbox_store import open_store
    from tests.support.inbox_rows import NOW, record

    database = open_database(f"{postgres_url}?ssl=require")
    assert not await database.ping()
    with pytest.raises(ConnectionError, match="SSL"):
        await repo.find_instance_fast(database, "inst_missing")
    with pytest.raises(ConnectionError, match="SSL"):
        await open_store(database).store([record(1)], duplicates=0, now=NOW)
