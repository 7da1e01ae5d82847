"""The service's exception hierarchy. Every error the service raises on purpose is a
`ServiceError`; anything else reaching the HTTP layer is a bug and answers 500.

    ServiceError                    root; the class docstring is the default message
    ├── ConfigError                 bad or missing configuration (CLI exit code 2)
    ├── DatabaseError               the database is unreachable or not at the right schema
    │   └── SchemaMismatchError     database revision differs from the code's head
    ├── RequestError                a client request that cannot be processed as sent
    │   ├── MalformedRequestError   not JSON, wrong shape (400)
    │   ├── ValidationFailedError   fields fail validation; one entry per field (422)
    │   ├── PayloadTooLargeError    body over the limit (413)
    │   ├── AuthenticationError     missing or wrong API key (401)
    │   ├── ForbiddenError          the key's role may not do this (403)
    │   └── WebhookSignatureError   inbound webhook not verifiable (401)
    ├── DomainError                 a request the lifecycle rules refuse
    │   ├── InstanceNotFoundError   no instance with that id
    │   ├── IllegalTransitionError  the state machine does not allow this change
    │   ├── InstanceBusyError       the instance is mid-operation; retry shortly
    │   └── IdempotencyConflictError same key, different body, or still in flight
    └── UpstreamError               Novita failed; `service.novita.errors` refines it
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The service could not complete the operation."""

    code = "SERVICE_ERROR"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)


class ConfigError(ServiceError):
    """The configuration is invalid."""

    code = "CONFIG_ERROR"


class DatabaseError(ServiceError):
    """The database is not available."""

    code = "DATABASE_UNAVAILABLE"


class SchemaMismatchError(DatabaseError):
    """The database schema does not match this version of the service."""

    code = "SCHEMA_MISMATCH"


class RequestError(ServiceError):
    """The request cannot be processed as sent."""

    code = "BAD_REQUEST"


class MalformedRequestError(RequestError):
    """The request body is not valid JSON of the expected shape."""

    code = "MALFORMED_REQUEST"


class ValidationFailedError(RequestError):
    """Some fields are invalid."""

    code = "VALIDATION_ERROR"

    def __init__(self, fields: list[dict[str, Any]], message: str | None = None) -> None:
        names = ", ".join(str(item["field"]) for item in fields) or "request"
        super().__init__(message or f"invalid fields: {names}", fields=fields)
        self.fields = fields


class PayloadTooLargeError(RequestError):
    """The request body is larger than allowed."""

    code = "PAYLOAD_TOO_LARGE"


class AuthenticationError(RequestError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""

    code = "UNAUTHORIZED"


class ForbiddenError(RequestError):
    """This API key's role may not do this."""

    code = "FORBIDDEN"


class WebhookSignatureError(RequestError):
    """The webhook's signature could not be verified."""

    code = "INVALID_SIGNATURE"


class DomainError(ServiceError):
    """The request breaks a lifecycle rule."""

    code = "DOMAIN_ERROR"


class InstanceNotFoundError(DomainError):
    """No instance has that id."""

    code = "INSTANCE_NOT_FOUND"

    @classmethod
    def for_id(cls, instance_id: str) -> InstanceNotFoundError:
        return cls(f"no instance with id {instance_id!r}", instanceId=instance_id)


class IllegalTransitionError(DomainError):
    """The instance cannot move to that status from its current one."""

    code = "ILLEGAL_TRANSITION"

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


class IdempotencyConflictError(DomainError):
    """The Idempotency-Key was already used with another request, or is still in flight."""

    code = "IDEMPOTENCY_CONFLICT"


class UpstreamError(ServiceError):
    """The GPU provider did not complete the request."""

    code = "UPSTREAM_ERROR"
