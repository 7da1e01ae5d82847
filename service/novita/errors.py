"""Errors from talking to Novita, and the one place HTTP failures become them.

This module's part of the tree in `service.errors` (our API answers each 502, except the
two marked 503, with its `code` and `{providerStatus, providerReason}` as details):

    UpstreamError (service.errors)
    └── NovitaError                     status, reason, message, metadata, endpoint, retry_after
        ├── NovitaAuthenticationError   401: the API key is missing or wrong
        ├── NovitaForbiddenError        403
        ├── NovitaNotFoundError         400 with a not-found reason; 404 with a JSON body; 404
        │                               with a plain-text body once the base URL is confirmed
        ├── NovitaCapacityError         INSUFFICIENT_RESOURCE, MIGRATE_INSUFFICIENT_RESOURCE
        ├── NovitaInvalidStateError     409; 400 "invalid state change" or reason CONFLICT
        ├── NovitaBadRequestError       any other 4xx (validation, quota, balance, image...)
        │   └── NovitaCudaIncompatibleError  CUDA_VERSION_INCOMPATIBLE: this product, not the
        │                                    request: a create tries the next candidate
        ├── NovitaRateLimitedError      429; `retry_after` from the Retry-After header (503)
        ├── NovitaProtocolError         an answer this client cannot understand
        └── NovitaUnavailableError      Novita cannot be reached or does not work now (503)
            ├── NovitaServerError       5xx
            ├── NovitaTimeoutError      no answer within the request timeout
            ├── NovitaNetworkError      connection refused/reset, DNS, TLS, broken body
            └── NovitaCircuitOpenError  raised locally while the breaker is open

Decisions:
- Not-found reasons are those naming the *addressed* resource (`RESOURCE_NOT_FOUND`,
  `INSTANCE_NOT_FOUND`, `TEMPLATE_NOT_FOUND`, `JOB_NOT_FOUND`). A missing *referenced* resource
  in a create (`IMAGE_NOT_FOUND`, `NETWORK_STORAGE_NOT_FOUND`, ...) is a bad request: callers
  read "not found" on an instance as "deleted", and a bad image must never mean that.
- The error token is read from `reason`, or, when a body has none, from the first
  UPPER_SNAKE word of `message` that this module knows ("INSUFFICIENT_RESOURCE: ...").
- A 404 with a plain-text body (a gateway's "404 page not found") is ambiguous: a missing
  instance, or a wrong route (bad base URL, proxy). Until this client has had one 2xx answer
  from the base URL (`route_confirmed`) it is a protocol error, so a misconfiguration can
  never "delete" everything; after that the route is known good and it means not found.
- `retryable` marks errors worth another attempt of an idempotent call; `availability_failure`
  marks those the circuit breaker counts. 429 is neither an availability failure nor a success:
  Novita answered, and the limiter's pause handles it.
- Messages and metadata pass through `redact`, so a provider echoing the API key (or any
  `Bearer` token) cannot carry it into logs, events or API responses.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from service.errors import UpstreamError

REDACTED = "[REDACTED]"
NOT_FOUND_REASONS = frozenset(
    {"RESOURCE_NOT_FOUND", "INSTANCE_NOT_FOUND", "TEMPLATE_NOT_FOUND", "JOB_NOT_FOUND"}
)
CAPACITY_REASONS = frozenset({"INSUFFICIENT_RESOURCE", "MIGRATE_INSUFFICIENT_RESOURCE"})
INVALID_STATE_REASONS = frozenset({"CONFLICT"})
INVALID_STATE_MESSAGE = "invalid state change"
CUDA_INCOMPATIBLE_REASON = "CUDA_VERSION_INCOMPATIBLE"
# Tokens looked for in `message` when a body carries no `reason` (docs/novita-facts.md).
KNOWN_REASONS = (
    NOT_FOUND_REASONS
    | CAPACITY_REASONS
    | INVALID_STATE_REASONS
    | frozenset(
        {
            CUDA_INCOMPATIBLE_REASON,
            "UNAUTHORIZED",
            "FORBIDDEN",
            "RATE_LIMIT_EXCEEDED",
            "VALIDATOR_PARAM",
            "CREATE_GPU_NUM_LIMIT",
            "CREATE_INSTANCE_LIMIT",
            "BALANCE_NOT_ENOUGH",
            "UNSUPPORTED_BILLING_MODE",
            "IMAGE_NOT_FOUND",
            "NETWORK_STORAGE_NOT_FOUND",
        }
    )
)
_TOKEN = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b")
_MAX_TEXT = 500
_BEARER = re.compile(r"(?i)bearer\s+\S+")


class NovitaError(UpstreamError):
    """Novita did not complete the request."""

    code = "NOVITA_ERROR"
    retryable: ClassVar[bool] = False
    availability_failure: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        details: dict[str, Any] = {"endpoint": endpoint, "status": status, "reason": reason}
        if retry_after is not None:
            details["retryAfter"] = retry_after
        super().__init__(message, **{k: v for k, v in details.items() if v is not None})
        self.status = status
        self.reason = reason
        self.metadata: Mapping[str, Any] = dict(metadata or {})
        self.endpoint = endpoint
        self.retry_after = retry_after

    def public_details(self) -> object:
        # What Novita said, not how we reached it (no endpoint, no metadata echo).
        return {"providerStatus": self.status, "providerReason": self.reason}


class NovitaAuthenticationError(NovitaError):
    """Novita rejected the API key."""

    code = "NOVITA_AUTHENTICATION"


class NovitaForbiddenError(NovitaError):
    """Novita refused the request for this account."""

    code = "NOVITA_FORBIDDEN"


class NovitaNotFoundError(NovitaError):
    """Novita has no such resource."""

    code = "NOVITA_NOT_FOUND"


class NovitaCapacityError(NovitaError):
    """Novita has no capacity for this product here now."""

    code = "NOVITA_CAPACITY"


class NovitaInvalidStateError(NovitaError):
    """The instance cannot do that in its current state."""

    code = "NOVITA_INVALID_STATE"


class NovitaBadRequestError(NovitaError):
    """Novita rejected the request."""

    code = "NOVITA_BAD_REQUEST"


class NovitaCudaIncompatibleError(NovitaBadRequestError):
    """The product's CUDA is older than the image needs: another product may do."""

    code = "NOVITA_CUDA_INCOMPATIBLE"


class NovitaRateLimitedError(NovitaError):
    """Novita is rate limiting this client."""

    code = "NOVITA_RATE_LIMITED"
    http_status = 503
    retryable = True


class NovitaProtocolError(NovitaError):
    """Novita answered something this client does not understand."""

    code = "NOVITA_PROTOCOL"


class NovitaUnavailableError(NovitaError):
    """Novita is unavailable."""

    code = "NOVITA_UNAVAILABLE"
    http_status = 503
    retryable = True
    availability_failure = True


class NovitaServerError(NovitaUnavailableError):
    """Novita failed with a server error."""

    code = "NOVITA_SERVER_ERROR"


class NovitaTimeoutError(NovitaUnavailableError):
    """Novita did not answer in time."""

    code = "NOVITA_TIMEOUT"


class NovitaNetworkError(NovitaUnavailableError):
    """Novita could not be reached."""

    code = "NOVITA_NETWORK"


class NovitaCircuitOpenError(NovitaUnavailableError):
    """Novita calls are suspended after repeated failures."""

    code = "NOVITA_CIRCUIT_OPEN"
    # Raised before any request is sent: retrying inside the call would only spin.
    retryable = False
    availability_failure = False


@dataclass(frozen=True)
class HttpFailure:
    """A non-2xx answer, read fully, before translation."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def _redact_value(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {redact(str(k), secrets): _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, secrets) for v in value]
    return value


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _decode_body(body: bytes) -> tuple[Mapping[str, Any] | None, str]:
    """The error body as a Novita `{code, reason, message, metadata}` mapping, or raw text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        return None, text
    if isinstance(parsed, dict) and ("reason" in parsed or "message" in parsed):
        return parsed, text
    if isinstance(parsed, dict) and ("msg" in parsed or "error" in parsed):
        message = parsed.get("msg") or parsed.get("error")
        return {**parsed, "message": message if isinstance(message, str) else str(message)}, text
    return None, text


def reason_of(reason: Any, message: str) -> str | None:
    """The error token: `reason` if given, else a known token named in `message`."""
    if reason is not None and str(reason).strip():
        return str(reason).strip()
    tokens: list[str] = _TOKEN.findall(message)
    return next((token for token in tokens if token in KNOWN_REASONS), None)


def _classify(
    status: int, reason: str | None, message: str, has_body: bool, route_confirmed: bool = False
) -> type[NovitaError]:
    upper_reason = (reason or "").upper()
    if status == 401:
        return NovitaAuthenticationError
    if status == 403:
        return NovitaForbiddenError
    if status == 429:
        return NovitaRateLimitedError
    if status >= 500:
        return NovitaServerError
    if status == 404:
        return NovitaNotFoundError if has_body or route_confirmed else NovitaProtocolError
    if 400 <= status < 500:
        if upper_reason in CAPACITY_REASONS:
            return NovitaCapacityError
        if upper_reason == CUDA_INCOMPATIBLE_REASON:
            return NovitaCudaIncompatibleError
        if upper_reason in NOT_FOUND_REASONS:
            return NovitaNotFoundError
        if (
            status == 409
            or upper_reason in INVALID_STATE_REASONS
            or INVALID_STATE_MESSAGE in message.lower()
        ):
            return NovitaInvalidStateError
        return NovitaBadRequestError
    return NovitaProtocolError


def _from_response(
    failure: HttpFailure,
    endpoint: str,
    secrets: Sequence[str],
    now: datetime | None,
    route_confirmed: bool,
) -> NovitaError:
    parsed, text = _decode_body(failure.body)
    message = str(parsed.get("message") or "") if parsed else text[:_MAX_TEXT]
    reason = reason_of(parsed.get("reason") if parsed else None, message)
    raw_metadata = parsed.get("metadata") if parsed else None
    metadata = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    error_class = _classify(
        failure.status, reason, message, parsed is not None, route_confirmed
    )
    headers = {k.lower(): v for k, v in failure.headers.items()}
    retry_after = (
        parse_retry_after(headers.get("retry-after"), now)
        if failure.status == 429 or failure.status >= 500
        else None
    )
    label = f"Novita {endpoint} answered {failure.status}" + (f" {reason}" if reason else "")
    return error_class(
        redact(f"{label}: {message}" if message else label, secrets),
        status=failure.status,
        reason=redact(reason, secrets) if reason else None,
        metadata=_redact_value(metadata, secrets),
        endpoint=endpoint,
        retry_after=retry_after,
    )


def _from_exception(exc: BaseException, endpoint: str, secrets: Sequence[str]) -> NovitaError:
    if isinstance(exc, NovitaError):
        return exc
    # aiohttp's timeout errors subclass both ClientError and TimeoutError: test timeouts first.
    error_class: type[NovitaError]
    if isinstance(exc, TimeoutError):
        error_class, what = NovitaTimeoutError, "timed out"
    else:
        error_class, what = NovitaNetworkError, "failed"
    detail = str(exc)
    text = f"Novita {endpoint} {what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return error_class(redact(text[:_MAX_TEXT], secrets), endpoint=endpoint)


def translate(
    failure: HttpFailure | BaseException,
    *,
    endpoint: str,
    secrets: Sequence[str] = (),
    now: datetime | None = None,
    route_confirmed: bool = False,
) -> NovitaError:
    """Turn a non-2xx answer or a transport exception into the matching `NovitaError`.

    Transport exceptions are aiohttp's `ClientError`s, `TimeoutError` and `OSError`; the
    client catches exactly those and passes them here. `now` resolves HTTP-date Retry-After.
    `route_confirmed`: the base URL has answered 2xx before, so a bare 404 means not found.
    """
    if isinstance(failure, HttpFailure):
        return _from_response(failure, endpoint, secrets, now, route_confirmed)
    return _from_exception(failure, endpoint, secrets)
