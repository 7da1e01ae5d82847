"""Frozen records of the notification side: what the store returns and what a delivery yields."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class NotificationStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # dead letter: the ladder ran out, or it could never be sent
    CANCELLED = "cancelled"  # the target answered 410 Gone (or was already disabled)
    NO_TARGET = "no_target"  # neither the instance nor WEBHOOK_URL names a target


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"  # 2xx
    FAILED = "failed"  # 3xx/4xx/5xx, timeout, connection error: retried on the ladder
    GONE = "gone"  # 410: the target is disabled
    REFUSED = "refused"  # the target resolved to a forbidden address (SSRF); retried


@dataclass(frozen=True, slots=True)
class Notification:
    id: str  # also the `webhook-id` header, identical on every attempt
    instance_id: str
    sequence: int
    type: str
    status: NotificationStatus
    target_url: str | None  # None: sent to WEBHOOK_URL at delivery time
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class NotificationAttempt:
    number: int
    started_at: datetime
    duration_ms: int
    target_url: str
    outcome: AttemptOutcome
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class NotificationDetail:
    notification: Notification
    attempts: tuple[NotificationAttempt, ...]


@dataclass(frozen=True, slots=True)
class DueNotification:
    """An outbox row that is due, before a notifier decides what to do with it."""

    id: str
    instance_id: str
    type: str
    target_url: str | None
    attempts: int
    ladder_attempts: int  # attempts since the ladder last started (creation or redelivery)


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    """An outbox row reserved by one notifier for one delivery attempt."""

    id: str
    instance_id: str
    type: str
    payload: dict[str, Any]
    target_url: str | None
    attempts: int
    ladder_attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one HTTP attempt came to; every attempt is recorded, whatever happened."""

    outcome: AttemptOutcome
    target_url: str
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait
