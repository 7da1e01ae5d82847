"""How many SQL statements the write path sends, on SQLite and PostgreSQL: a state change
is at most four (lock the row, write it and read it back in one UPDATE … RETURNING, the
event, the notification), and a claim is one UPDATE … RETURNING whatever it claims. A
caller that has locked the row already (the provisioner, a delete's second change, an
adoption's path) hands it to `change_status`, which then does not read it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service import intents
from service.clock import ManualClock
from service.db import claims
from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, InstanceSpec, Status
from service.lifecycle import Lifecycle
from service.novita import NovitaClient
from service.provisioning.naming import provider_name
from service.provisioning.status_map import Observation
from service.simulator import Simulator
from service.simulator.validation import parse_create
from service.workers.provider_truth import Report, Verdict, apply_observation
from service.workers.provisioner import Provisioner
from tests.plugins.service import ServiceUnderTest
from tests.support.provisioning import add_instance, api_moves, load, make_provisioner
from tests.support.statements import sent_statements

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GPU_BODY = {
    "productId": "4090.16c62g",
    "gpuNum": 1,
    "rootfsSize": 20,
    "imageUrl": "pytorch/pytorch:2.4.0",
}


def spec(name: str = "trainer") -> InstanceSpec:
    return InstanceSpec(
        name=name,
        product_name="RTX 4090 24GB",
        template_id="212",
        webhook_url="https://hooks.example.com/novita",
    )


async def create(database: Database, name: str = "trainer", *, at: datetime = T0) -> str:
    async with database.transaction() as conn:
        result = await repo.insert_instance(conn, spec(name), now=at)
    return result.instance.id


async def test_a_state_change_is_four_statements_and_returns_what_it_wrote(
    database: Database,
) -> None:
    instance_id = await create(database)
    now = T0 + timedelta(minutes=1)
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            result = await repo.change_status(
                conn,
                instance_id,
                Status.PROVISIONING,
                source=EventSource.PROVISIONER,
                now=now,
                provider_status="pending",
                observed_at=now,
                changes={"novita_instance_id": "nv-1", "region": "AS-SGP-02"},
            )
    assert sent == ["SELECT", "UPDATE", "INSERT", "INSERT"]

    async with database.read() as conn:
        stored = await repo.get_instance(conn, instance_id)
        [_, event] = (await repo.list_events(conn, instance_id)).items
        [_, message] = await repo.list_outbox(conn, instance_id=instance_id)
    assert result.instance == stored, "the returned instance is the row as written"
    assert stored.status is Status.PROVISIONING and stored.event_seq == 2
    assert stored.novita_instance_id == "nv-1" and stored.provider_observed_at == now
    assert result.event == event and (event.seq, event.to_status) == (2, Status.PROVISIONING)
    assert (message.event_seq, message.type) == (2, "instance.provisioning")
    assert message.payload["data"]["sequence"] == 2
    assert message.payload["data"]["region"] == "AS-SGP-02"


async def test_a_change_to_the_same_status_is_two_statements_and_records_no_event(
    database: Database,
) -> None:
    instance_id = await create(database)
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            result = await repo.change_status(
                conn,
                instance_id,
                Status.PENDING,
                source=EventSource.RECONCILER,
                now=T0 + timedelta(minutes=1),
                provider_status="pending",
            )
    assert sent == ["SELECT", "UPDATE"]
    assert result.event is None
    assert result.instance.provider_status == "pending" and result.instance.version == 2


async def test_clearing_the_intent_of_a_row_locked_already_is_one_update(
    database: Database,
) -> None:
    """As `Lifecycle` does once it has locked the row to record the change it asked for."""
    instance_id = await create(database)
    intent = intents.new_intent(
        "stop", source=EventSource.API, kind="stop_requested", reason=None, detail=None, now=T0
    )
    async with database.transaction() as conn:
        await repo.set_action_intent(conn, instance_id, intent)
    async with database.transaction() as conn:
        locked = await repo.get_instance(conn, instance_id, for_update=True)
        with sent_statements(database) as sent:
            await repo.set_action_intent(conn, instance_id, None, locked=locked)
    assert sent == ["UPDATE"]
    cleared = await load(database, instance_id)
    assert cleared.action_intent is None and cleared.version == locked.version + 1


async def test_an_intent_is_not_written_over_a_row_changed_since_it_was_locked(
    database: Database,
) -> None:
    instance_id = await create(database)
    intent = intents.new_intent(
        "stop", source=EventSource.API, kind="stop_requested", reason=None, detail=None, now=T0
    )
    newer = {**intent, "kind": "stop_requested_again"}
    async with database.transaction() as conn:
        await repo.set_action_intent(conn, instance_id, intent)
        stale = await repo.get_instance(conn, instance_id)
        await repo.set_action_intent(conn, instance_id, newer)
    with pytest.raises(RuntimeError, match="changed underneath"):
        async with database.transaction() as conn:
            await repo.set_action_intent(conn, instance_id, None, locked=stale)
    assert (await load(database, instance_id)).action_intent == newer


async def test_a_new_instance_is_three_statements(database: Database) -> None:
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            result = await repo.insert_instance(conn, spec(), now=T0)
    assert sent == ["INSERT", "INSERT", "INSERT"]
    assert result.instance.event_seq == 1 and result.instance.failed_attempts == 0
    assert result.event is not None and result.event.seq == 1


async def test_claiming_nine_rows_is_one_statement_returning_them_in_due_order(
    database: Database,
) -> None:
    ids = [
        await create(database, f"job-{n}", at=T0 + timedelta(seconds=n)) for n in range(10)
    ]
    now = T0 + timedelta(minutes=5)
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            claimed = await claims.claim_pending(conn, owner="me", now=now, ttl=60, limit=9)
    assert sent == ["UPDATE"]
    assert [i.id for i in claimed] == ids[:9], "the longest-due rows, oldest first"
    assert {(i.claim_owner, i.claim_expires_at) for i in claimed} == {
        ("me", now + timedelta(seconds=60))
    }

    async with database.transaction() as conn:
        again = await claims.claim_pending(conn, owner="other", now=now, ttl=60, limit=9)
    assert [i.id for i in again] == ids[9:], "claimed rows are not claimed twice"


async def test_applying_an_observation_that_moves_one_step_is_four_statements(
    database: Database,
) -> None:
    """The applier locks and reads the row once; `change_status` reuses that row."""
    instance_id = await create(database)
    async with database.transaction() as conn:
        await repo.change_status(
            conn,
            instance_id,
            Status.PROVISIONING,
            source=EventSource.PROVISIONER,
            now=T0 + timedelta(minutes=1),
            changes={"novita_instance_id": "nv-1"},
        )
    now = T0 + timedelta(minutes=2)
    report = Report(
        observation=Observation(status="running"),
        observed_at=now,
        source=EventSource.WEBHOOK,
        detail={},
    )
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            applied = await apply_observation(
                conn, instance_id, report, now=now, settle_seconds=30
            )
    assert (applied.verdict, applied.status) == (Verdict.APPLIED, Status.RUNNING)
    assert sent == ["SELECT", "UPDATE", "INSERT", "INSERT"]
    async with database.read() as conn:
        stored = await repo.get_instance(conn, instance_id)
    assert (stored.status, stored.event_seq, stored.provider_observed_at) == (
        Status.RUNNING,
        3,
        now,
    )


async def test_a_stale_locked_row_fails_the_version_guard_instead_of_overwriting(
    database: Database,
) -> None:
    instance_id = await create(database)
    async with database.read() as conn:
        stale = await repo.get_instance(conn, instance_id)
    async with database.transaction() as conn:  # someone else changes the row meanwhile
        await repo.change_status(
            conn,
            instance_id,
            Status.PENDING,
            source=EventSource.RECONCILER,
            now=T0 + timedelta(minutes=1),
            provider_status="pending",
        )
    async with database.transaction() as conn:
        with pytest.raises(RuntimeError, match="changed underneath"):
            await repo.change_status(
                conn,
                instance_id,
                Status.FAILED,
                source=EventSource.PROVISIONER,
                now=T0 + timedelta(minutes=2),
                locked=stale,
            )


def without_begin(sent: list[str]) -> list[str]:
    """The statements of several transactions (SQLite's BEGIN IMMEDIATE is a statement of
    its own; PostgreSQL's BEGIN is not sent as one)."""
    return [statement for statement in sent if statement != "BEGIN"]


async def test_the_provisioner_records_a_create_with_the_row_it_locked(
    database: Database, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    """Claim, note the intent, then one transaction: lock the row, look for another holder
    of the Novita id, the state change (reusing the locked row), release the claim."""
    await add_instance(database, sim_clock)
    await provisioner.run_once()  # the catalogue and template caches filled
    instance_id = await add_instance(database, sim_clock)
    with sent_statements(database) as sent:
        assert await provisioner.run_once() == 1
    assert without_begin(sent) == [
        "UPDATE",  # claim
        "UPDATE",  # the intent
        "SELECT",  # lock the row
        "SELECT",  # who holds the Novita id
        "UPDATE",
        "INSERT",
        "INSERT",
        "UPDATE",  # release the claim
    ]
    assert (await load(database, instance_id)).status is Status.PROVISIONING


async def test_the_provisioner_ends_a_cancelled_create_with_the_row_it_locked(
    database: Database, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    """A request deleted while its create was in flight, the create never landing."""
    instance_id = await add_instance(database, sim_clock)
    async with database.transaction() as conn:
        await claims.claim_pending(conn, owner="old", now=sim_clock.now(), ttl=5, limit=10)
        await claims.record_intent(conn, instance_id, owner="old", now=sim_clock.now(), ttl=5)
    await api_moves(database, sim_clock, instance_id, Status.DELETING)
    provisioner = make_provisioner(database, novita, sim_clock, owner="new", create_settle=60)
    sim_clock.advance(61)
    with sent_statements(database) as sent:
        await provisioner.run_once()
    assert without_begin(sent) == ["UPDATE", "SELECT", "UPDATE", "INSERT", "INSERT"]
    assert (await load(database, instance_id)).status is Status.DELETED


async def test_a_create_landing_after_a_delete_is_kept_on_the_row_the_provisioner_locked(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    """The request was deleted while its create was in flight and the create landed: the
    row keeps the Novita id (a change to the status it has: no event) in the transaction
    that locked it."""
    instance_id = await add_instance(database, sim_clock)
    async with database.transaction() as conn:
        await claims.claim_pending(conn, owner="old", now=sim_clock.now(), ttl=5, limit=10)
        await claims.record_intent(conn, instance_id, owner="old", now=sim_clock.now(), ttl=5)
    mono, unix = simulator.now()
    made = parse_create({**GPU_BODY, "name": provider_name(instance_id, "trainer")})
    _, changes = simulator.state.create(made, mono, unix)
    simulator.apply(changes)
    await api_moves(database, sim_clock, instance_id, Status.DELETING)
    provisioner = make_provisioner(database, novita, sim_clock, owner="new")
    sim_clock.advance(61)
    with sent_statements(database) as sent:
        await provisioner.run_once()
    assert without_begin(sent) == ["UPDATE", "SELECT", "SELECT", "UPDATE", "UPDATE"]
    stored = await load(database, instance_id)
    assert stored.status is Status.DELETING and stored.novita_instance_id is not None


async def test_deleting_a_request_never_submitted_changes_the_row_twice_locking_it_once(
    service: ServiceUnderTest,
) -> None:
    database = service.resources.database
    instance_id = await add_instance(database, service.clock)
    with sent_statements(database) as sent:
        deleted = await Lifecycle(service.resources).delete(instance_id)
    # (The lookup before is a point read: not sent through SQLAlchemy's execution.)
    assert without_begin(sent) == [
        *["SELECT", "UPDATE", "INSERT", "INSERT"],  # deleting
        *["UPDATE", "INSERT", "INSERT"],  # deleted, on the row the first change returned
    ]
    assert deleted.status is Status.DELETED and deleted.event_seq == 3


async def test_an_adopted_instance_takes_its_path_on_the_row_it_inserted(
    database: Database,
) -> None:
    now = T0 + timedelta(minutes=1)
    async with database.transaction() as conn:
        with sent_statements(database) as sent:
            result = await repo.insert_adopted_instance(
                conn,
                "inst_0123456789abcdef0123456789",
                spec("orphan"),
                path=(Status.PROVISIONING, Status.RUNNING),
                now=now,
                facts={"novita_instance_id": "nv-orphan"},
                provider_status="running",
                observed_at=now,
                detail={},
            )
    assert sent == [
        "SELECT",  # is the id or the Novita id taken
        *["INSERT", "INSERT", "INSERT"],  # created
        *["UPDATE", "INSERT", "INSERT"],  # adopted: provisioning
        *["UPDATE", "INSERT", "INSERT"],  # running
    ]
    assert result is not None
    assert (result.instance.status, result.instance.event_seq) == (Status.RUNNING, 3)
    assert result.instance.novita_instance_id == "nv-orphan"
