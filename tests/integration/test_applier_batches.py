"""The applier takes a batch of webhooks at once: reports that only confirm an instance's
status are decided on the rows read once for the batch and written in one statement at
the end, every other one goes through `apply_observation`. Whatever the batch holds, the
outcomes and the rows are those of applying the same events one at a time."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from service.clock import ManualClock
from service.db import inbox
from service.db import repository as repo
from service.db.engine import Database
from service.db.inbox import InboxRecord
from service.db.models import inbound_webhooks
from service.domain import EventSource, Status
from service.workers import applier as applier_module
from service.workers.applier import InboxApplier
from tests.support.provisioning import add_instance, events, load
from tests.support.statements import sent_statements

T0 = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
# (Novita status, seconds after T0 it was observed), in the order the webhooks arrive.
REPORTS = [
    ("running", 1),  # what we know: unchanged
    ("running", 0),  # older than the newest applied: stale
    ("hibernating", 2),  # a status we do not know: kept, and what was seen recorded
    ("exited", 3),  # stopped: applied
    ("exited", 4),  # unchanged
    ("running", 3.5),  # stale
    ("running", 5),  # started again: applied
    ("running", 6),  # unchanged
]


async def running_instance(database: Database, clock: ManualClock, novita_id: str) -> str:
    instance_id = await add_instance(database, clock)
    async with database.transaction() as conn:
        await repo.change_status(
            conn,
            instance_id,
            Status.PROVISIONING,
            source=EventSource.PROVISIONER,
            now=clock.now(),
            changes={"novita_instance_id": novita_id, "submitted_at": clock.now()},
        )
        await repo.change_status(
            conn, instance_id, Status.RUNNING, source=EventSource.RECONCILER, now=clock.now()
        )
    return instance_id


async def store(
    database: Database, clock: ManualClock, novita_id: str, status: str, at: float
) -> str:
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = {
        "type": "instance.status_changed",
        "timestamp": (T0 + timedelta(seconds=at)).isoformat(),
        "data": {"instanceId": novita_id, "status": status},
    }
    record = InboxRecord(msg_id, "instance.status_changed", novita_id, json.dumps(body))
    async with database.transaction() as conn:
        await inbox.store_batch(conn, [record], now=clock.now())
    return msg_id


async def outcomes(database: Database, msg_ids: list[str]) -> list[str]:
    async with database.read() as conn:
        found = dict(
            (
                await conn.execute(
                    sa.select(inbound_webhooks.c.webhook_id, inbound_webhooks.c.outcome).where(
                        inbound_webhooks.c.webhook_id.in_(msg_ids)
                    )
                )
            ).all()
        )
    return [found[msg_id] for msg_id in msg_ids]


async def test_a_batch_gives_the_outcomes_and_rows_of_one_event_at_a_time(
    database: Database,
) -> None:
    clock = ManualClock(T0 - timedelta(minutes=1))
    together = await running_instance(database, clock, "novita-together")
    beside = await running_instance(database, clock, "novita-beside")
    alone = await running_instance(database, clock, "novita-alone")
    clock.advance(70)  # every report is in the past
    applier = InboxApplier(database, clock)

    one_by_one = []
    for status, at in REPORTS:
        one_by_one.append(await store(database, clock, "novita-alone", status, at))
        assert await applier.run_once() == 1
    # Two instances' reports interleaved: one's change of status holds back only its own
    # later reports, not the other's.
    batched, interleaved = [], []
    for status, at in REPORTS:
        batched.append(await store(database, clock, "novita-together", status, at))
        interleaved.append(await store(database, clock, "novita-beside", status, at))
    unknown = await store(database, clock, "novita-nobody", "running", 6)
    assert await applier.run_once() == 2 * len(REPORTS) + 1

    expected = [
        "unchanged",
        "stale",
        "unrecognised_status",
        "applied",
        "unchanged",
        "stale",
        "applied",
        "unchanged",
    ]
    assert await outcomes(database, one_by_one) == expected
    assert await outcomes(database, batched) == expected
    assert await outcomes(database, interleaved) == expected
    assert await outcomes(database, [unknown]) == ["unknown_instance"]

    reference = await load(database, alone)
    assert reference.status is Status.RUNNING and reference.provider_status == "running"
    assert reference.provider_observed_at == T0 + timedelta(seconds=6)
    for instance_id in (together, beside):
        mine = await load(database, instance_id)
        assert mine.status is reference.status
        assert mine.provider_status == reference.provider_status
        assert mine.provider_observed_at == reference.provider_observed_at
        assert [(e.from_status, e.to_status) for e in await events(database, instance_id)] == [
            (e.from_status, e.to_status) for e in await events(database, alone)
        ]


async def test_an_unknown_status_confirmed_in_a_batch_is_recorded_as_seen(
    database: Database,
) -> None:
    clock = ManualClock(T0 - timedelta(minutes=1))
    instance_id = await running_instance(database, clock, "novita-1")
    clock.advance(70)
    stored = [
        await store(database, clock, "novita-1", "running", 1),
        await store(database, clock, "novita-1", "hibernating", 2),
    ]
    before = await load(database, instance_id)
    assert await InboxApplier(database, clock).run_once() == 2
    assert await outcomes(database, stored) == ["unchanged", "unrecognised_status"]
    instance = await load(database, instance_id)
    assert instance.status is Status.RUNNING
    assert instance.provider_status == "hibernating"
    assert instance.provider_observed_at == T0 + timedelta(seconds=2)
    assert instance.updated_at == clock.now()
    assert instance.version > before.version
    assert instance.event_seq == before.event_seq  # nothing happened to the instance itself


async def test_every_event_is_stamped_processed_after_it_was_received(database: Database) -> None:
    clock = ManualClock(T0)
    await running_instance(database, clock, "novita-1")
    stored = [await store(database, clock, "novita-1", "running", 0) for _ in range(3)]
    clock.advance(2)
    await InboxApplier(database, clock).run_once()
    async with database.read() as conn:
        rows = (
            await conn.execute(
                sa.select(inbound_webhooks.c.received_at, inbound_webhooks.c.processed_at).where(
                    inbound_webhooks.c.webhook_id.in_(stored)
                )
            )
        ).all()
    assert len(rows) == 3
    assert all(processed == received + timedelta(seconds=2) for received, processed in rows)


async def test_on_a_sqlite_file_a_pass_takes_what_fits_its_time_and_full_ones_follow(
    database: Database,
) -> None:
    """Each pass holds SQLite's write lock about PASS_SECONDS: its batch is sized from the
    time per event of the last full ones, and one run goes on while batches come full."""
    if database.sqlite_file is None:
        return  # PostgreSQL (and SQLite in memory) take `batch_size` at a time
    clock = ManualClock(T0)
    applier = InboxApplier(database, clock)
    applier.seconds_per_event = applier_module.PASS_SECONDS / 30
    assert applier.pass_limit() == 30
    stored = [await store(database, clock, f"novita-{n}", "running", 1) for n in range(100)]

    assert await applier.run_once() == 100, "all in one run, over passes of up to 30"
    assert await outcomes(database, stored) == ["unknown_instance"] * 100
    assert applier.seconds_per_event != applier_module.PASS_SECONDS / 30, "measured again"
    assert applier_module.MIN_BATCH <= applier.pass_limit() <= applier.batch_size


async def test_events_needing_no_instance_are_settled_by_the_claim_itself(
    database: Database,
) -> None:
    """An event of a type not applied, one without an instance id and one about an instance
    we do not know get their outcomes, lag and stamp like the others; on PostgreSQL the
    claim statement settles them, so a batch of only those is one statement."""
    clock = ManualClock(T0 - timedelta(minutes=1))
    await running_instance(database, clock, "novita-known")
    clock.advance(70)
    odd = [
        InboxRecord(f"msg_{uuid.uuid4().hex}", "instance.billing", "novita-known", "{}"),
        InboxRecord(f"msg_{uuid.uuid4().hex}", "instance.status_changed", None, "{}"),
        InboxRecord(
            f"msg_{uuid.uuid4().hex}",
            "instance.status_changed",
            "novita-nobody",
            json.dumps({"data": {"instanceId": "novita-nobody", "status": "running"}}),
        ),
    ]
    async with database.transaction() as conn:
        await inbox.store_batch(conn, odd, now=clock.now())
    settled = [record.webhook_id for record in odd]
    clock.advance(3)
    applier = InboxApplier(database, clock)
    with sent_statements(database) as sent:
        assert await applier.run_once() == 3
    assert await outcomes(database, settled) == [
        "ignored_type",
        "no_instance_id",
        "unknown_instance",
    ]
    if database.dialect == "postgresql":
        assert sent == ["WITH"]
    assert (applier.lag.count, applier.lag.sum) == (3, 9.0)

    # Mixed with events to apply, in one batch: each still gets its own outcome.
    mixed = [
        await store(database, clock, "novita-known", "running", 5),
        await store(database, clock, "novita-nobody", "running", 5),
        await store(database, clock, "novita-known", "exited", 6),
    ]
    async with database.transaction() as conn:
        await inbox.store_batch(conn, [replace(odd[0], webhook_id="msg_late")], now=clock.now())
    assert await applier.run_once() == 4
    assert await outcomes(database, [*mixed, "msg_late"]) == [
        "unchanged",
        "unknown_instance",
        "applied",
        "ignored_type",
    ]
    assert applier.lag.count == 7
    async with database.read() as conn:
        assert await inbox.backlog(conn) == (0, None)
        stamps = (
            await conn.execute(
                sa.select(inbound_webhooks.c.processed_at).where(
                    inbound_webhooks.c.webhook_id.in_(settled)
                )
            )
        ).scalars()
        assert set(stamps) == {T0 + timedelta(seconds=13)}
