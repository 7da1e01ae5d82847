"""What a status change tells its client: the notification's type and JSON body.

The body carries the instance as the API shows it (`service.presenters`), as of the change,
with the reason for it. `change_status` stores it in the outbox in the same transaction as
the change, so the database layer asks this room for the body instead of shaping it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.domain import Instance, Status, notification_type
from service.presenters import instance_view, iso


def status_change_message(
    instance: Instance, to_status: Status, reason: str | None, now: datetime
) -> tuple[str, dict[str, Any]]:
    """The notification type and body of `instance` having moved to `to_status`."""
    data = instance_view(instance)
    data["statusReason"] = reason
    message_type = notification_type(to_status)
    return message_type, {"type": message_type, "timestamp": iso(now), "data": data}
