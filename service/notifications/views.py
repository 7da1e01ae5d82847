"""How notifications look from outside: the camelCase JSON of the REST API."""

from __future__ import annotations

from typing import Any

from service.notifications.models import Notification, NotificationAttempt, NotificationDetail
from service.presenters import iso


def notification_view(
    notification: Notification, *, include_payload: bool = True
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": notification.id,
        "instanceId": notification.instance_id,
        "sequence": notification.sequence,
        "type": notification.type,
        "status": notification.status.value,
        "targetUrl": notification.target_url,
        "attempts": notification.attempts,
        "nextAttemptAt": iso(notification.next_attempt_at),
        "createdAt": iso(notification.created_at),
        "updatedAt": iso(notification.updated_at),
        "lastStatusCode": notification.last_status_code,
        "lastError": notification.last_error,
        "deliveredAt": iso(notification.delivered_at),
    }
    if include_payload:
        view["payload"] = notification.payload
    return view


def attempt_view(attempt: NotificationAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "startedAt": iso(attempt.started_at),
        "durationMs": attempt.duration_ms,
        "targetUrl": attempt.target_url,
        "outcome": attempt.outcome.value,
        "statusCode": attempt.status_code,
        "error": attempt.error,
    }


def notification_detail_view(detail: NotificationDetail) -> dict[str, Any]:
    view = notification_view(detail.notification)
    view["attemptLog"] = [attempt_view(attempt) for attempt in detail.attempts]
    return view
