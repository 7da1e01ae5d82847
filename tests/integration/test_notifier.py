"""The notifier against a real receiver on loopback, on SQLite and PostgreSQL.

Every delivery is verified by the receiver with the `standardwebhooks` package. Time is a
ManualClock shared by the notifier and the receiver: retry steps are taken by advancing it,
never by sleeping; only answers from the receiver are awaited (with bounded timeouts).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db import outbox as outbox_db
from service.db import repository as repo
from service.db.engine import Database
from service.db.models import outbox
from service.domain import EventSource, InstanceSpec, Status
from service.errors import NotificationPendingError
from service.notifications.models import AttemptOutcome, NotificationDetail, NotificationStatus
from service.settings import Settings
from service.workers.notifier import NO_SECRET_ERROR, NO_TARGET_ERROR, Notifier
from tests.support.webhook_receiver import WebhookReceiver, running_receiver

SECRET = "whsec_" + base64.b64encode(b"notifier-test-signing-key-0123456789").decode()
ENV_SECRET = "hf_topsecret_value"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "allow_private_webhook_targets": True,  # the receiver lives on loopback
        "webhook_timeout": 5.0,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def receiver(clock: ManualClock) -> AsyncIterator[WebhookReceiver]:
    async with running_receiver(SECRET, clock) as receiver:
        yield receiver
        assert receiver.verification_errors == [], "every delivery must verify"


@pytest.fixture
async def notifier(database: Database, clock: ManualClock) -> AsyncIterator[Notifier]:
    async with Notifier(
        database=database, settings=make_settings(), clock=clock, owner="notifier-a"
    ) as notifier:
        yield notifier


async def create_instance(
    database: Database, clock: ManualClock, webhook_url: str | None, name: str = "trainer"
) -> str:
    spec = InstanceSpec(
        name=name,
        product_name="RTX 4090 24GB",
        template_id="212",
        envs=({"key": "HF_TOKEN", "value": ENV_SECRET},),
        webhook_url=webhook_url,
    )
    async with database.transaction() as conn:
        result = await repo.insert_instance(conn, spec, now=clock.now())
    return result.instance.id


async def move(database: Database, clock: ManualClock, instance_id: str, target: Status) -> None:
    async with database.transaction() as conn:
        await repo.change_status(
            conn, instance_id, target, source=EventSource.RECONCILER, now=clock.now()
        )


async def detail(database: Database, notification_id: str) -> NotificationDetail:
    async with database.read() as conn:
        return await outbox_db.get_notification(conn, notification_id)


async def only_notification(database: Database, instance_id: str) -> NotificationDetail:
    async with database.read() as conn:
        page = await outbox_db.list_notifications(conn, instance_id=instance_id)
    assert len(page.items) == 1
    return await detail(database, page.items[0].id)


async def drain(notifier: Notifier, rounds: int = 20) -> None:
    """Run batches until one finds nothing due."""
    for _ in range(rounds):
        if not await notifier.run_once():
            return
    raise AssertionError("the notifier kept finding work")


async def test_lifecycle_notifications_arrive_signed_in_sequence_without_secrets(
    database: Database, clock: ManualClock, receiver: WebhookReceiver, notifier: Notifier
) -> None:
    instance_id = await create_instance(database, clock, receiver.url("/hook"))
    for target in (Status.PROVISIONING, Status.RUNNING, Status.READY):
        clock.advance(1)
        await move(database, clock, instance_id, target)

    await drain(notifier)

    assert [r.payload["type"] for r in receiver.received] == [
        "instance.created",
        "instance.provisioning",
        "instance.running",
        "instance.ready",
    ]
    assert [r.payload["data"]["sequence"] for r in receiver.received] == [1, 2, 3, 4]
    assert all(r.payload["data"]["id"] == instance_id for r in receiver.received)
    async with database.read() as conn:
        page = await outbox_db.list_notifications(conn, instance_id=instance_id)
    assert [r.webhook_id for r in receiver.received] == [n.id for n in page.items]
    assert {n.status for n in page.items} == {NotificationStatus.DELIVERED}
    assert all(n.delivered_at is not None and n.attempts == 1 for n in page.items)
    assert all(r.headers["content-type"] == "application/json" for r in receiver.received)
    assert all(r.headers["user-agent"].startswith("novita-lifecycle/") for r in receiver.received)

    key_b64 = SECRET.removeprefix("whsec_")
    for request in receiver.received:
        assert request.payload["data"]["envKeys"] == ["HF_TOKEN"]
        everything = request.body.decode() + repr(request.headers)
        for secret in (ENV_SECRET, SECRET, key_b64):
            assert secret not in everything, "no secret may leave in a body or header"


async def test_failing_receiver_is_retried_until_delivered_with_a_stable_id(
    database: Database, clock: ManualClock, receiver: WebhookReceiver, notifier: Notifier
) -> None:
    receiver.plan("/flaky", 500, 502, 503)
    instance_id = await create_instance(database, clock, receiver.url("/flaky"))

    assert await notifier.run_once() == 1
    for failed in (1, 2, 3):
        assert await notifier.run_once() == 0, "not retried before the next ladder step"
        clock.advance(notifier.schedule.max_delay_after(failed) + 0.001)
        assert await notifier.run_once() == 1

    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.DELIVERED
    assert result.notification.attempts == 4
    assert [(a.number, a.outcome, a.status_code) for a in result.attempts] == [
        (1, AttemptOutcome.FAILED, 500),
        (2, AttemptOutcome.FAILED, 502),
        (3, AttemptOutcome.FAILED, 503),
        (4, AttemptOutcome.DELIVERED, 200),
    ]
    assert len({r.webhook_id for r in receiver.received}) == 1
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) == 4


async def test_gone_cancels_the_url_now_and_later_and_notes_it_on_the_instance(
    database: Database, clock: ManualClock, receiver: WebhookReceiver, notifier: Notifier
) -> None:
    receiver.plan("/gone", 410)
    gone_id = await create_instance(database, clock, receiver.url("/gone"), name="a")
    clock.advance(1)
    await move(database, clock, gone_id, Status.PROVISIONING)  # pending behind the first
    other_id = await create_instance(database, clock, receiver.url("/other"), name="b")

    with capture_logs() as logs:
        await notifier.run_once()
    await move(database, clock, gone_id, Status.RUNNING)  # after the 410: never sent
    await drain(notifier)

    assert len(receiver.to("/gone")) == 1
    assert [r.payload["data"]["id"] for r in receiver.to("/other")] == [other_id]
    async with database.read() as conn:
        gone = await outbox_db.list_notifications(conn, instance_id=gone_id)
        events = (await repo.list_events(conn, gone_id)).items
        instance = await repo.get_instance(conn, gone_id)
        disabled = await outbox_db.list_disabled_targets(conn)
    assert [n.status for n in gone.items] == [NotificationStatus.CANCELLED] * 3
    assert "410" in (gone.items[1].last_error or "")
    assert [d.url for d in disabled] == [receiver.url("/gone")]
    note = events[-2]  # the note, then the `running` transition made afterwards
    assert (note.kind, note.from_status, note.to_status) == ("notifications_disabled", None, None)
    assert note.detail["notificationId"] == gone.items[0].id
    assert instance.status is Status.RUNNING
    assert len(gone.items) == 3, "the note event has no outbox row"
    assert any(entry["event"] == "notify.target_disabled" for entry in logs)

    async with database.transaction() as conn:
        assert await outbox_db.enable_target(conn, receiver.url("/gone"))
        await outbox_db.redeliver_notification(conn, gone.items[2].id, now=clock.now())
    await drain(notifier)
    assert (await detail(database, gone.items[2].id)).notification.status is (
        NotificationStatus.DELIVERED
    )


async def test_redirects_are_not_followed_and_count_as_failures(
    database: Database, clock: ManualClock, receiver: WebhookReceiver, notifier: Notifier
) -> None:
    receiver.plan("/moved", 302, headers={"Location": receiver.url("/elsewhere")})
    instance_id = await create_instance(database, clock, receiver.url("/moved"))

    await notifier.run_once()

    result = await only_notification(database, instance_id)
    assert receiver.to("/elsewhere") == []
    assert result.notification.status is NotificationStatus.PENDING
    assert result.notification.last_status_code == 302
    assert "redirects are not followed" in (result.notification.last_error or "")
    assert result.notification.next_attempt_at is not None
    assert result.notification.next_attempt_at >= clock.now() + timedelta(seconds=5)


@pytest.mark.parametrize("as_date", [False, True])
async def test_retry_after_delays_the_next_attempt(
    database: Database,
    clock: ManualClock,
    receiver: WebhookReceiver,
    notifier: Notifier,
    as_date: bool,
) -> None:
    wait = 600
    value = str(wait)
    if as_date:
        value = (clock.now() + timedelta(seconds=wait)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    receiver.plan("/busy", 429, headers={"Retry-After": value})
    await create_instance(database, clock, receiver.url("/busy"))

    await notifier.run_once()
    clock.advance(wait - 1)
    assert await notifier.run_once() == 0, "not before Retry-After"
    assert len(receiver.received) == 1
    clock.advance(2)
    assert await notifier.run_once() == 1
    assert len(receiver.received) == 2


async def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    receiver.hang("/slow")
    instance_id = await create_instance(database, clock, receiver.url("/slow"))
    settings = make_settings(webhook_timeout=0.2)

    async with Notifier(database=database, settings=settings, clock=clock, owner="n") as notifier:
        async with asyncio.timeout(5):
            await notifier.run_once()

    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.PENDING
    assert [(a.outcome, a.status_code) for a in result.attempts] == [(AttemptOutcome.FAILED, None)]
    assert "within 0.2 s" in (result.attempts[0].error or "")


async def test_dead_letter_after_the_last_step_then_redelivery_on_a_fresh_ladder(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    receiver.plan("/down", *[500] * 5)
    instance_id = await create_instance(database, clock, receiver.url("/down"))
    settings = make_settings(webhook_retry_schedule=(0, 5, 60))

    async with Notifier(database=database, settings=settings, clock=clock, owner="n") as notifier:
        await notifier.run_once()
        for failed in (1, 2):
            clock.advance(notifier.schedule.max_delay_after(failed) + 0.001)
            await notifier.run_once()
        clock.advance(86_400)
        with capture_logs():
            assert await notifier.run_once() == 0, "nothing after the ladder"

        dead = await only_notification(database, instance_id)
        assert dead.notification.status is NotificationStatus.FAILED
        assert dead.notification.attempts == 3
        assert dead.notification.next_attempt_at is None

        since = clock.now() - timedelta(days=2)
        async with database.transaction() as conn:
            assert await outbox_db.redeliver_failed_since(conn, since, now=clock.now()) == 1
        await notifier.run_once()  # 4th attempt overall, 1st of the new ladder: 500
        clock.advance(notifier.schedule.max_delay_after(1) + 0.001)
        await notifier.run_once()  # 500 again: still pending, the ladder restarted
        assert (await only_notification(database, instance_id)).notification.status is (
            NotificationStatus.PENDING
        )
        clock.advance(notifier.schedule.max_delay_after(2) + 0.001)
        await notifier.run_once()  # the plan is used up: 200

    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.DELIVERED
    assert result.notification.attempts == 6
    assert [a.number for a in result.attempts] == [1, 2, 3, 4, 5, 6]


async def test_a_delivery_cut_off_by_a_crash_is_retried_after_the_claim_expires(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    release = receiver.hang("/crash")
    instance_id = await create_instance(database, clock, receiver.url("/crash"))
    settings = make_settings(notifier_claim_ttl=60)

    first = Notifier(database=database, settings=settings, clock=clock, owner="dies")
    batch = asyncio.create_task(first.run_once())
    await receiver.hanging("/crash")
    batch.cancel()  # the process dies mid-request: nothing is recorded
    with pytest.raises(asyncio.CancelledError):
        await batch
    await first.aclose()
    release.set()

    async with Notifier(
        database=database, settings=settings, clock=clock, owner="restarted"
    ) as second:
        assert await second.run_once() == 0, "the dead process's claim is still valid"
        clock.advance(61)
        assert await second.run_once() == 1

    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.DELIVERED
    assert len(receiver.received) == 2
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
    ],
)
async def test_private_targets_are_refused_at_delivery_and_recorded(
    database: Database, clock: ManualClock, url: str
) -> None:
    instance_id = await create_instance(database, clock, url)
    settings = make_settings(allow_private_webhook_targets=False)

    async with Notifier(database=database, settings=settings, clock=clock, owner="n") as notifier:
        with capture_logs() as logs:
            assert await notifier.run_once() == 1

    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.PENDING, "retried, not dropped"
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.REFUSED]
    assert "address" in (result.notification.last_error or "")
    assert [entry["event"] for entry in logs if entry["event"] == "notify.target_refused"]


async def test_rows_without_any_target_are_recorded_as_no_target(
    database: Database, clock: ManualClock, notifier: Notifier
) -> None:
    instance_id = await create_instance(database, clock, None)

    with capture_logs():
        assert await notifier.run_once() == 1

    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.NO_TARGET
    assert result.notification.last_error == NO_TARGET_ERROR
    assert result.attempts == ()


async def test_rows_without_a_target_go_to_the_default_webhook_url(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    instance_id = await create_instance(database, clock, None)
    settings = make_settings(webhook_url=receiver.url("/default"))

    async with Notifier(database=database, settings=settings, clock=clock, owner="n") as notifier:
        await notifier.run_once()

    assert len(receiver.to("/default")) == 1
    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.DELIVERED
    assert result.attempts[0].target_url == receiver.url("/default")


async def test_without_a_signing_secret_nothing_is_sent_unsigned(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    instance_id = await create_instance(database, clock, receiver.url("/hook"))
    settings = make_settings(webhook_secret=None)

    async with Notifier(database=database, settings=settings, clock=clock, owner="n") as notifier:
        with capture_logs():
            await notifier.run_once()

    assert receiver.received == []
    result = await only_notification(database, instance_id)
    assert result.notification.status is NotificationStatus.FAILED
    assert result.notification.last_error == NO_SECRET_ERROR


async def test_two_notifiers_never_deliver_the_same_row_at_once(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    receiver.delay = 0.02  # keep deliveries in flight while the other notifier claims
    count = 24
    for index in range(count):
        await create_instance(database, clock, receiver.url("/shared"), name=f"i{index}")
    # Small batches: a claim looks at (and on PostgreSQL locks) 4 x 4 rows, so one
    # notifier can never take all 24 before the other gets a share.
    settings = make_settings(notifier_concurrency=4)

    async with (
        Notifier(database=database, settings=settings, clock=clock, owner="a") as first,
        Notifier(database=database, settings=settings, clock=clock, owner="b") as second,
    ):
        for _ in range(count):
            done = await asyncio.gather(first.run_once(), second.run_once())
            if sum(done) == 0:
                break

    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == count and len(set(ids)) == count, "each row delivered exactly once"
    assert receiver.overlaps == []
    assert first.outcome_counts.delivered > 0 and second.outcome_counts.delivered > 0
    async with database.read() as conn:
        statuses = (await conn.execute(sa.select(outbox.c.status))).scalars().all()
    assert set(statuses) == {"delivered"}


async def test_deliveries_in_flight_are_capped_per_target_host(
    database: Database, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    """NOTIFIER_PER_HOST_CONCURRENCY bounds what one receiver has in hand at once: a batch
    takes that many rows per host (two names of one receiver are two hosts to the cap)."""
    receiver.delay = 0.02
    for index in range(10):
        await create_instance(database, clock, receiver.url("/a"), name=f"a{index}")
        other = receiver.url("/b").replace("127.0.0.1", "localhost")
        await create_instance(database, clock, other, name=f"b{index}")
    settings = make_settings(notifier_concurrency=16, notifier_per_host_concurrency=3)
    async with Notifier(database=database, settings=settings, clock=clock, owner="a") as notifier:
        assert await notifier.run_once() == 6, "three to each host"
        batches = 1
        while await notifier.run_once():
            batches += 1
    assert len(receiver.received) == 20
    assert batches == 4  # ceil(10 / 3) batches for each host, side by side


async def test_listing_pages_filters_and_redelivery_rules(
    database: Database, clock: ManualClock, receiver: WebhookReceiver, notifier: Notifier
) -> None:
    first = await create_instance(database, clock, receiver.url("/hook"), name="a")
    clock.advance(1)
    await move(database, clock, first, Status.PROVISIONING)
    second = await create_instance(database, clock, receiver.url("/hook"), name="b")

    async with database.read() as conn:
        page1 = await outbox_db.list_notifications(conn, limit=2)
        assert page1.next_key is not None
        page2 = await outbox_db.list_notifications(conn, limit=2, after=page1.next_key)
        only_b = await outbox_db.list_notifications(conn, instance_id=second)
        provisioning = await outbox_db.list_notifications(conn, type="instance.provisioning")
    assert len(page1.items) == 2 and len(page2.items) == 1 and page2.next_key is None
    assert {n.id for n in page1.items + page2.items} == {
        n.id for n in (await outbox_db_all(database))
    }
    assert [n.instance_id for n in only_b.items] == [second]
    assert [n.instance_id for n in provisioning.items] == [first]

    with pytest.raises(NotificationPendingError):
        async with database.transaction() as conn:
            await outbox_db.redeliver_notification(conn, only_b.items[0].id, now=clock.now())

    await drain(notifier)
    async with database.read() as conn:
        delivered = await outbox_db.list_notifications(conn, status="delivered")
    assert len(delivered.items) == 3
    async with database.transaction() as conn:
        again = await outbox_db.redeliver_notification(conn, only_b.items[0].id, now=clock.now())
    assert again.status is NotificationStatus.PENDING and again.attempts == 1
    await drain(notifier)
    assert len([r for r in receiver.received if r.webhook_id == only_b.items[0].id]) == 2


async def outbox_db_all(database: Database) -> list[Any]:
    async with database.read() as conn:
        return list((await outbox_db.list_notifications(conn, limit=100)).items)


async def test_no_target_is_said_once_at_info_not_a_warning_per_change(
    database: Database, clock: ManualClock, notifier: Notifier
) -> None:
    """A default `make run` has no webhook target: that is normal, not a warning each time."""
    first = await create_instance(database, clock, None, name="one")
    await create_instance(database, clock, None, name="two")
    with capture_logs() as logs:
        await drain(notifier)
        await move(database, clock, first, Status.PROVISIONING)
        await drain(notifier)
    said = [entry for entry in logs if entry["event"] == "notify.no_target"]
    assert len(said) == 3
    assert [entry["log_level"] for entry in said] == ["info", "debug", "debug"]
    assert "WEBHOOK_URL" in said[0]["note"]
