"""The notifier: delivers outbox rows to clients' webhook URLs, signed, retried (README).

One `run_once` is one batch; a worker's commit that queued notifications (a status read
from Novita, `ready`) wakes the loop at once (`NOTIFICATIONS_QUEUED`), else it looks
every second:

1. In one transaction, select due rows and decide each: no target (neither the instance's
   webhookUrl nor WEBHOOK_URL) → `no_target`; target disabled by an earlier 410 →
   `cancelled`; no WEBHOOK_SECRET → `failed` (never sent unsigned); the rest are claimed
   (owner + expiry), at most `notifier_concurrency` rows, at most
   `notifier_per_host_concurrency` per target host and one per instance. Those caps are the
   concurrency limits: every claimed row is delivered at once, and batches never overlap.
   One row per instance keeps an instance's notifications in order when all goes well;
   across retries the order is not guaranteed (receivers order by `data.sequence`).
2. Deliver the claimed rows concurrently; record outcomes as they complete, grouped into
   few transactions: delivered, retry later (ladder + jitter + Retry-After), dead letter.
3. A 410 Gone disables the URL: its other pending rows are cancelled and every affected
   instance gets a `notifications_disabled` event (no status change, no notification).

A process that dies mid-batch leaves claims that expire after `notifier_claim_ttl`; another
notifier then delivers those rows again (at-least-once, same `webhook-id`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

import aiohttp
import structlog

from service.clock import Clock
from service.db import outbox as outbox_db
from service.db import repository
from service.db.engine import NOTIFICATIONS_QUEUED, CommitNotes, Database
from service.domain import EventSource
from service.errors import WebhookTargetRefusedError
from service.notifications.delivery import Deliverer, new_delivery_session
from service.notifications.models import (
    AttemptOutcome,
    ClaimedNotification,
    DeliveryResult,
    DueNotification,
    NotificationStatus,
)
from service.notifications.schedule import RetrySchedule
from service.notifications.signing import SigningKeys, encode_body
from service.notifications.ssrf import parse_target
from service.resources import Resources
from service.settings import Settings
from service.workers.loop import Figures, WorkerLoop

log = structlog.get_logger(__name__)

NO_TARGET_ERROR = "no webhookUrl on the instance and WEBHOOK_URL is not set"
NO_SECRET_ERROR = "WEBHOOK_SECRET is not set: notifications are never sent unsigned"
GONE_KIND = "notifications_disabled"
_RECORD_WINDOW = 0.05  # seconds


@dataclass
class OutcomeCounts:
    """How many notifications this notifier has closed each way, and claims it lost,
    since it started."""

    delivered: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    no_target: int = 0
    claims_lost: int = 0


def _host_key(url: str) -> str:
    try:
        host, port = parse_target(url)
    except WebhookTargetRefusedError:
        return url  # delivery refuses it; any key will do for the per-host cap
    return f"{host.lower()}:{port}"


def _host(url: str) -> str:
    return _host_key(url).rsplit(":", 1)[0]


class Notifier:
    name = "notifier"

    def __init__(
        self,
        *,
        database: Database,
        settings: Settings,
        clock: Clock,
        owner: str,
        schedule: RetrySchedule | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._clock = clock
        self.owner = owner
        self.schedule = schedule or RetrySchedule(settings.webhook_retry_schedule)
        self._no_target_noted = False
        secret = settings.webhook_secret
        self._key = SigningKeys.from_secret(secret.get_secret_value()) if secret else None
        self._default_url = settings.webhook_url
        self._batch_size = settings.notifier_concurrency
        self._per_host = settings.notifier_per_host_concurrency
        # A claim must outlive the slowest attempt plus the recording of its outcome, or a
        # second notifier would deliver the row while the first still waits for an answer.
        self._claim_ttl = max(settings.notifier_claim_ttl, 2 * settings.webhook_timeout)
        self._session = session
        self._owns_session = session is None
        self._deliverer: Deliverer | None = None
        self.outcome_counts = OutcomeCounts()

    @classmethod
    def from_resources(cls, resources: Resources) -> Notifier:
        return cls(
            database=resources.database,
            settings=resources.settings,
            clock=resources.clock,
            owner=resources.owner,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this notifier created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
        self._deliverer = None

    def _get_deliverer(self) -> Deliverer:
        if self._deliverer is None:
            if self._session is None:
                self._session = new_delivery_session(
                    allow_private=self._settings.allow_private_webhook_targets,
                    concurrency=self._batch_size,
                    per_host_concurrency=self._per_host,
                )
            self._deliverer = Deliverer(
                self._session,
                clock=self._clock,
                timeout=self._settings.webhook_timeout,
                allow_private=self._settings.allow_private_webhook_targets,
            )
        return self._deliverer

    def figures(self, now: datetime) -> Figures:
        return {}

    async def run_once(self) -> int:
        claimed, closed = await self._claim_batch()
        if claimed:
            await self._deliver_all(claimed)
        return closed + len(claimed)

    # --- 1. claim -------------------------------------------------------------------------

    async def _claim_batch(self) -> tuple[list[tuple[ClaimedNotification, str]], int]:
        """Claim this batch's deliveries and close rows that cannot be sent; return the
        claimed `(row, url)` pairs and how many rows were closed."""
        now = self._clock.now()
        chosen: list[DueNotification] = []
        chosen_urls: dict[str, str] = {}
        no_target: list[str] = []
        disabled: list[str] = []
        unsigned: list[str] = []
        async with self._database.transaction() as conn:
            due = await outbox_db.select_due(conn, now=now, limit=self._batch_size * 4)
            urls = {row.id: row.target_url or self._default_url for row in due}
            off = await outbox_db.disabled_targets(conn, {u for u in urls.values() if u})
            per_host: Counter[str] = Counter()
            instances: set[str] = set()
            for row in due:
                url = urls[row.id]
                if url is None:
                    no_target.append(row.id)
                elif url in off:
                    disabled.append(row.id)
                elif self._key is None:
                    unsigned.append(row.id)
                elif (
                    len(chosen) < self._batch_size
                    and per_host[_host_key(url)] < self._per_host
                    and row.instance_id not in instances
                ):
                    chosen.append(row)
                    chosen_urls[row.id] = url
                    per_host[_host_key(url)] += 1
                    instances.add(row.instance_id)
            await outbox_db.close_unsent(
                conn, no_target, status=NotificationStatus.NO_TARGET, error=NO_TARGET_ERROR, now=now
            )
            await outbox_db.close_unsent(
                conn,
                disabled,
                status=NotificationStatus.CANCELLED,
                error="the target URL is disabled (it answered 410 Gone); re-enable it first",
                now=now,
            )
            await outbox_db.close_unsent(
                conn, unsigned, status=NotificationStatus.FAILED, error=NO_SECRET_ERROR, now=now
            )
            claimed = await outbox_db.claim(
                conn,
                chosen,
                owner=self.owner,
                now=now,
                expires_at=now + timedelta(seconds=self._claim_ttl),
            )
        self.outcome_counts.no_target += len(no_target)
        self.outcome_counts.cancelled += len(disabled)
        self.outcome_counts.dead_lettered += len(unsigned)
        for notification_id in no_target:
            # Normal when nobody asked to be told (a default `make run`): said once, at info.
            if self._no_target_noted:
                log.debug("notify.no_target", notification_id=notification_id)
            else:
                self._no_target_noted = True
                log.info(
                    "notify.no_target",
                    notification_id=notification_id,
                    note="neither the instance's webhookUrl nor WEBHOOK_URL is set: "
                    "notifications are recorded, not sent (further ones at debug level)",
                )
        for notification_id in unsigned:
            log.error("notify.dead_letter", notification_id=notification_id, error=NO_SECRET_ERROR)
        deliver = [(row, chosen_urls[row.id]) for row in claimed]
        return deliver, len(no_target) + len(disabled) + len(unsigned)

    # --- 2. deliver and record ------------------------------------------------------------

    async def _deliver_all(self, claimed: Sequence[tuple[ClaimedNotification, str]]) -> None:
        deliverer = self._get_deliverer()
        tasks = {
            asyncio.create_task(self._deliver_one(deliverer, row, url), name=f"notify:{row.id}")
            for row, url in claimed
        }
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending:
                    # Let the rest of a fast batch join this write: one transaction for many
                    # outcomes, while a slow receiver delays the others' records only briefly.
                    more, pending = await asyncio.wait(pending, timeout=_RECORD_WINDOW)
                    done |= more
                await self._record([task.result() for task in done])
        finally:
            # On cancellation or a failed write, leave the rest to the claim expiry.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver_one(
        self, deliverer: Deliverer, row: ClaimedNotification, url: str
    ) -> tuple[ClaimedNotification, DeliveryResult]:
        assert self._key is not None  # rows are only claimed for delivery with a key
        result = await deliverer.attempt(
            url, message_id=row.id, body=encode_body(row.payload), keys=self._key
        )
        return row, result

    async def _record(self, results: list[tuple[ClaimedNotification, DeliveryResult]]) -> None:
        now = self._clock.now()
        records = [self._decide(row, result) for row, result in results]
        async with self._database.transaction() as conn:
            applied = await outbox_db.record_attempts(conn, records, owner=self.owner, now=now)
        for record in records:
            self._log_outcome(record, applied=record.claimed.id in applied)
        for record in records:
            if record.result.outcome is AttemptOutcome.GONE:
                await self._disable_target(record, now=now)

    def _decide(self, row: ClaimedNotification, result: DeliveryResult) -> outbox_db.AttemptRecord:
        if result.outcome is AttemptOutcome.DELIVERED:
            return outbox_db.AttemptRecord(row, result, NotificationStatus.DELIVERED)
        if result.outcome is AttemptOutcome.GONE:
            return outbox_db.AttemptRecord(row, result, NotificationStatus.CANCELLED)
        delay = self.schedule.delay_after(row.ladder_attempts + 1, retry_after=result.retry_after)
        if delay is None:
            return outbox_db.AttemptRecord(row, result, NotificationStatus.FAILED)
        next_at = self._clock.now() + timedelta(seconds=delay)
        return outbox_db.AttemptRecord(row, result, NotificationStatus.PENDING, next_at)

    def _log_outcome(self, record: outbox_db.AttemptRecord, *, applied: bool) -> None:
        row, result = record.claimed, record.result
        fields = {
            "notification_id": row.id,
            "instance_id": row.instance_id,
            "type": row.type,
            "attempt": row.attempts + 1,
            "target_host": _host(result.target_url),
            "status_code": result.status_code,
            "duration_ms": result.duration_ms,
        }
        if not applied:
            self.outcome_counts.claims_lost += 1
            log.warning("notify.claim_lost", outcome=result.outcome.value, **fields)
            return
        if result.outcome is AttemptOutcome.DELIVERED:
            self.outcome_counts.delivered += 1
            log.info("notify.delivered", **fields)
            return
        if result.outcome is AttemptOutcome.GONE:
            self.outcome_counts.cancelled += 1
            return  # logged as notify.target_disabled
        self.outcome_counts.failed_attempts += 1
        if result.outcome is AttemptOutcome.REFUSED:
            log.warning("notify.target_refused", error=result.error, **fields)
        if record.status is NotificationStatus.FAILED:
            self.outcome_counts.dead_lettered += 1
            log.error("notify.dead_letter", error=result.error, **fields)
        else:
            log.warning(
                "notify.attempt_failed",
                error=result.error,
                next_attempt_at=record.next_attempt_at.isoformat()
                if record.next_attempt_at
                else None,
                **fields,
            )

    # --- 3. 410 Gone ----------------------------------------------------------------------

    async def _disable_target(self, record: outbox_db.AttemptRecord, *, now: datetime) -> None:
        url = record.result.target_url
        reason = f"the target answered 410 Gone to notification {record.claimed.id}"
        async with self._database.transaction() as conn:
            newly = await outbox_db.disable_target(
                conn, url, now=now, outbox_id=record.claimed.id, status_code=410
            )
            cancelled = await outbox_db.cancel_pending_for_target(
                conn, url, include_untargeted=url == self._default_url, now=now, reason=reason
            )
            per_instance = Counter(instance_id for _id, instance_id in cancelled)
            affected = sorted({record.claimed.instance_id, *per_instance})
            for instance_id in affected:  # sorted: a fixed lock order across processes
                await repository.append_note(
                    conn,
                    instance_id,
                    kind=GONE_KIND,
                    source=EventSource.POLICY,
                    now=now,
                    reason="webhook_gone",
                    detail={
                        "targetUrl": url,
                        "statusCode": 410,
                        "notificationId": record.claimed.id,
                        "cancelledNotifications": per_instance[instance_id],
                    },
                )
        self.outcome_counts.cancelled += len(cancelled)
        log.warning(
            "notify.target_disabled",
            notification_id=record.claimed.id,
            target_host=_host(url),
            newly_disabled=newly,
            cancelled=len(cancelled),
            instances=len(affected),
        )


class NotifierLoop(WorkerLoop):
    """The worker loop that also closes the notifier's HTTP session when it ends."""

    def __init__(self, notifier: Notifier, *, idle_interval: float = 1.0) -> None:
        super().__init__(notifier, idle_interval=idle_interval)
        self.notifier = notifier

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.notifier.aclose()


def build_notifier_loop(resources: Resources) -> WorkerLoop:
    loop = NotifierLoop(Notifier.from_resources(resources))

    def on_commit(notes: CommitNotes) -> None:
        if notes.get(NOTIFICATIONS_QUEUED):
            loop.wake()  # deliver what a worker just queued without waiting for the next pass

    resources.database.commit_listeners.append(on_commit)
    return loop
