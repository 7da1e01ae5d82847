"""The service's errors: one tree, and each class says how the HTTP API answers it.

Every error the service raises on purpose is a `ServiceError`. A class carries its answer
as class attributes: `http_status` and `code` (the `error.code` clients read); its message
and `public_details()` fill the rest of the body, `http_headers()` adds what the status
calls for (`Retry-After`, `WWW-Authenticate`). `service.api.errors` reads these and nothing
else, so adding a class here (or below a class here) is all it takes to answer it right.
Anything that is not a `ServiceError` reaching the HTTP layer is a bug and answers 500
(a database outage is the one exception: 503, see `service.db.outage`).

    class                             status, code                  what it means
    ServiceError                      500 SERVICE_ERROR             root; docstring = message
    ├── ConfigError                   500 CONFIG_ERROR              bad configuration (CLI: 2)
    ├── DatabaseError                 503 DATABASE_UNAVAILABLE
    │   └── SchemaMismatchError       503 SCHEMA_MISMATCH           not at the code's revision
    ├── IngestBusyError               503 INGEST_BUSY               too many webhooks waiting
    ├── IngestUnavailableError        503 INGEST_UNAVAILABLE        a webhook was not stored
    ├── RequestError                  400 BAD_REQUEST               cannot be processed as sent
    │   ├── MalformedRequestError     400 MALFORMED_REQUEST         not JSON, wrong shape
    │   │   └── UnstorableEventError  400 UNSTORABLE_EVENT          no database would store it
    │   ├── ValidationFailedError     422 VALIDATION_ERROR          details: one entry a field
    │   ├── PayloadTooLargeError      413 PAYLOAD_TOO_LARGE
    │   ├── AuthenticationError       401 UNAUTHORIZED              no or wrong API key
    │   ├── ForbiddenError            403 FORBIDDEN                 the role (or session) may not
    │   └── WebhookSignatureError     401 INVALID_SIGNATURE         inbound webhook not verified
    ├── DomainError                   422 DOMAIN_ERROR              a lifecycle rule refuses it
    │   ├── InstanceNotFoundError     404 INSTANCE_NOT_FOUND
    │   ├── IllegalTransitionError    409 ILLEGAL_TRANSITION        the state machine forbids it
    │   ├── InstanceBusyError         409 INSTANCE_BUSY             mid-operation; Retry-After
    │   ├── IdempotencyConflictError  409 IDEMPOTENCY_CONFLICT
    │   ├── NotificationNotFoundError 404 NOTIFICATION_NOT_FOUND
    │   ├── NotificationPendingError  409 NOTIFICATION_PENDING      not yet redeliverable
    │   └── WebhookTargetRefusedError 422 WEBHOOK_TARGET_REFUSED    an SSRF rule refused the URL
    │       └── UnresolvableHostError 422 WEBHOOK_TARGET_REFUSED    its host does not resolve
    └── UpstreamError                 502 UPSTREAM_ERROR            the GPU provider failed
        ├── NoCapacityToStartError    409 INSUFFICIENT_CAPACITY     the instance stays stopped
        ├── ProviderStateConflictError 409 PROVIDER_STATE_CONFLICT
        ├── InstanceLostError         409 INSTANCE_LOST             Novita no longer has it
        └── NovitaError               502 NOVITA_*                  `service.novita.errors`:
            ├── NovitaRateLimitedError 503 NOVITA_RATE_LIMITED      one class a way Novita
            ├── NovitaUnavailableError 503 NOVITA_UNAVAILABLE       fails (its docstring draws
            │                                                       them), and the translation
            └── (the others)          502 NOVITA_*                  of its HTTP answers

Exceptions outside the tree, on purpose (never answered as they are; each is caught where
it is raised and turned into a tree error, a redirect or a retry):

- `service.signatures.SignatureError` → `WebhookSignatureError`;
- `service.api.clean_json.JsonSyntaxError`, `UncleanJsonError` (`ValueError`s, the parser's
  verdicts) → `MalformedRequestError` / `ValidationFailedError`;
- `service.notifications.ssrf.RefusedAddressError` (an `OSError`: aiohttp's resolver
  contract) → a failed delivery attempt;
- `service.dashboard.access.SignInRequiredError` → a redirect to the sign-in form;
- `service.event_hub.SubscriberDroppedError` → the event stream ends, the client catches up;
- workers' private control flow (`_Settled`, `_LeaseLost`, `_Interrupted`);
- `service.simulator.errors.SimError`: the simulator is a separate app that answers in
  Novita's error format, not ours.
"""

from __future__ import annotations

from typing import Any, ClassVar

# What a 503 says in Retry-After when the error knows no better (seconds).
RETRY_AFTER_SECONDS = 5.0


def retry_after_header(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds or RETRY_AFTER_SECONDS)))}


class ServiceError(Exception):
    """The service could not complete the operation."""

    code: ClassVar[str] = "SERVICE_ERROR"
    http_status: ClassVar[int] = 500
    # Seconds a client should wait before retrying (Retry-After on a 503); None: the default.
    retry_after: float | None = None

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)

    def public_details(self) -> object:
        """The answer's `error.details` (None: nothing to add)."""
        return self.details or None

    def http_headers(self) -> dict[str, str]:
        """Headers the answer carries: a 503 or 429 tells when to come back."""
        if self.http_status in (429, 503):
            return retry_after_header(self.retry_after)
        return {}


class ConfigError(ServiceError):
    """The configuration is invalid."""

    code = "CONFIG_ERROR"


class DatabaseError(ServiceError):
    """The database is not available."""

    code = "DATABASE_UNAVAILABLE"
    http_status = 503


class SchemaMismatchError(DatabaseError):
    """The database schema does not match this version of the service."""

    code = "SCHEMA_MISMATCH"


class IngestBusyError(ServiceError):
    """Too many webhooks are waiting to be stored; retry shortly."""

    code = "INGEST_BUSY"
    http_status = 503
    retry_after = 1.0


class IngestUnavailableError(ServiceError):
    """The webhook could not be stored; it was not acknowledged."""

    code = "INGEST_UNAVAILABLE"
    http_status = 503
    retry_after = 5.0


class RequestError(ServiceError):
    """The request cannot be processed as sent."""

    code = "BAD_REQUEST"
    http_status = 400


class MalformedRequestError(RequestError):
    """The request body is not valid JSON of the expected shape."""

    code = "MALFORMED_REQUEST"


class UnstorableEventError(MalformedRequestError):
    """The event cannot be stored as sent; retrying it will not help."""

    code = "UNSTORABLE_EVENT"


class ValidationFailedError(RequestError):
    """Some fields are invalid."""

    code = "VALIDATION_ERROR"
    http_status = 422

    def __init__(self, fields: list[dict[str, Any]], message: str | None = None) -> None:
        names = ", ".join(str(item["field"]) for item in fields) or "request"
        super().__init__(message or f"invalid fields: {names}", fields=fields)
        self.fields = fields

    def public_details(self) -> object:
        return {"fields": self.fields}


class PayloadTooLargeError(RequestError):
    """The request body is larger than allowed."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class AuthenticationError(RequestError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""

    code = "UNAUTHORIZED"
    http_status = 401

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="novita-lifecycle"'}


class ForbiddenError(RequestError):
    """This API key's role may not do this."""

    code = "FORBIDDEN"
    http_status = 403


class WebhookSignatureError(RequestError):
    """The webhook's signature could not be verified."""

    code = "INVALID_SIGNATURE"
    http_status = 401


class DomainError(ServiceError):
    """The request breaks a lifecycle rule."""

    code = "DOMAIN_ERROR"
    http_status = 422


class InstanceNotFoundError(DomainError):
    """No instance has that id."""

    code = "INSTANCE_NOT_FOUND"
    http_status = 404

    @classmethod
    def for_id(cls, instance_id: str) -> InstanceNotFoundError:
        return cls(f"no instance with id {instance_id!r}", instanceId=instance_id)


class IllegalTransitionError(DomainError):
    """The instance cannot move to that status from its current one."""

    code = "ILLEGAL_TRANSITION"
    http_status = 409

    def __init__(
        self, instance_id: str, current: str, requested: str, message: str | None = None
    ) -> None:
        super().__init__(
            message or f"instance {instance_id} is {current}; it cannot become {requested}",
            instanceId=instance_id,
            currentStatus=current,
            requestedStatus=requested,
        )
        self.instance_id = instance_id
        self.current = current
        self.requested = requested


class InstanceBusyError(DomainError):
    """The instance is in the middle of an operation; retry shortly."""

    code = "INSTANCE_BUSY"
    http_status = 409

    def http_headers(self) -> dict[str, str]:
        return retry_after_header(self.retry_after)


class IdempotencyConflictError(DomainError):
    """The Idempotency-Key was already used with another request, or is still in flight."""

    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class NotificationNotFoundError(DomainError):
    """No notification has that id."""

    code = "NOTIFICATION_NOT_FOUND"
    http_status = 404


class NotificationPendingError(DomainError):
    """The notification is still pending delivery; it cannot be redelivered yet."""

    code = "NOTIFICATION_PENDING"
    http_status = 409


class WebhookTargetRefusedError(DomainError):
    """The webhook URL is not allowed as a notification target."""

    code = "WEBHOOK_TARGET_REFUSED"

    def __init__(self, reason: str, *, host: str | None = None) -> None:
        super().__init__(f"webhook URL refused: {reason}", reason=reason, host=host)
        self.reason = reason


class UnresolvableHostError(WebhookTargetRefusedError):
    """The webhook URL's host does not resolve (at delivery time: a failed attempt, retried)."""


class UpstreamError(ServiceError):
    """The GPU provider did not complete the request."""

    code = "UPSTREAM_ERROR"
    http_status = 502


class NoCapacityToStartError(UpstreamError):
    """Novita has no capacity to start the instance now; it stays stopped."""

    code = "INSUFFICIENT_CAPACITY"
    http_status = 409


class ProviderStateConflictError(UpstreamError):
    """Novita refused the change for the instance's current provider state."""

    code = "PROVIDER_STATE_CONFLICT"
    http_status = 409


class InstanceLostError(UpstreamError):
    """Novita no longer has this instance."""

    code = "INSTANCE_LOST"
    http_status = 409
