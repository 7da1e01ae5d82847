"""The API shape of notifications, and pagination cursors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.cursors import decode_position, encode_position
from service.notifications.models import (
    AttemptOutcome,
    Notification,
    NotificationAttempt,
    NotificationDetail,
    NotificationStatus,
)
from service.notifications.views import notification_detail_view, notification_view

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def notification() -> Notification:
    return Notification(
        id="evt_1",
        instance_id="inst_1",
        sequence=3,
        type="instance.running",
        status=NotificationStatus.FAILED,
        target_url="https://hooks.example.com/x",
        payload={"type": "instance.running"},
        attempts=8,
        next_attempt_at=None,
        created_at=AT,
        updated_at=AT,
        last_status_code=500,
        last_error="HTTP 500",
        delivered_at=None,
    )


def test_notification_view_is_camel_case_json() -> None:
    view = notification_view(notification())
    assert view["instanceId"] == "inst_1"
    assert view["status"] == "failed"
    assert view["lastStatusCode"] == 500
    assert view["createdAt"] == "2026-03-01T12:00:00Z"
    assert "payload" not in notification_view(notification(), include_payload=False)


def test_detail_view_lists_attempts() -> None:
    attempt = NotificationAttempt(
        number=1,
        started_at=AT,
        duration_ms=12,
        target_url="https://hooks.example.com/x",
        outcome=AttemptOutcome.FAILED,
        status_code=500,
        error="HTTP 500",
    )
    view = notification_detail_view(NotificationDetail(notification(), (attempt,)))
    assert view["attemptLog"] == [
        {
            "number": 1,
            "startedAt": "2026-03-01T12:00:00Z",
            "durationMs": 12,
            "targetUrl": "https://hooks.example.com/x",
            "outcome": "failed",
            "statusCode": 500,
            "error": "HTTP 500",
        }
    ]


def test_cursor_round_trips() -> None:
    assert decode_position(encode_position(AT, "evt_9")) == (AT, "evt_9")


@pytest.mark.parametrize(
    "token", ["", "not-base64!", "WzFd", "WyIyMDI2LTAzLTAxVDEyOjAwOjAwIiwgIngiXQ"]
)
def test_foreign_cursors_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_position(token)
