"""Errors about notifications that the REST API answers with a 4xx (all `DomainError`s)."""

from __future__ import annotations

from service.errors import DomainError


class WebhookTargetRefusedError(DomainError):
    """The webhook URL is not allowed as a notification target."""

    code = "WEBHOOK_TARGET_REFUSED"

    def __init__(self, reason: str, *, host: str | None = None) -> None:
        super().__init__(f"webhook URL refused: {reason}", reason=reason, host=host)
        self.reason = reason


class UnresolvableHostError(WebhookTargetRefusedError):
    """The webhook URL's host does not resolve (at delivery time: a failed attempt, retried)."""


class NotificationNotFoundError(DomainError):
    """No notification has that id."""

    code = "NOTIFICATION_NOT_FOUND"


class NotificationPendingError(DomainError):
    """The notification is still pending delivery; it cannot be redelivered yet."""

    code = "NOTIFICATION_PENDING"


class InvalidCursorError(DomainError):
    """The pagination cursor is not one this service issued."""

    code = "INVALID_CURSOR"
