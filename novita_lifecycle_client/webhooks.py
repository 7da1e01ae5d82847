"""Receiving the service's notifications: verify, reject replays, drop duplicates.

Each delivery is signed twice with the key inside `WEBHOOK_SECRET` (`whsec_<base64 key>`):

- Standard Webhooks: `webhook-id`, `webhook-timestamp` (unix seconds) and
  `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; the
  header may hold several space-separated signatures, any valid `v1` one is enough;
- legacy: `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, body)>` and
  `X-Webhook-Timestamp`, for receivers written against the earlier service, which keyed
  this HMAC with the secret string exactly as configured (its UTF-8 bytes, `whsec_` and
  all). Deliveries of this service's first releases keyed it with the decoded key; both
  verify. It does not sign the timestamp, so it is only used when the standard headers are
  absent.

Give several secrets while rotating: a delivery signed with any of them is accepted.

Framework-agnostic: `verify(headers, raw_body, secrets)` answers a `WebhookEvent` or raises
a `WebhookVerificationError`; always pass the body exactly as received (bytes), never
re-serialised JSON. `WebhookReceiver` adds duplicate suppression by `webhook-id` (the
service delivers at least once and keeps the id across retries) and a callback;
`aiohttp_handler(...)` makes it an aiohttp route handler.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from novita_lifecycle_client.errors import WebhookVerificationError

__all__ = [
    "InvalidSignatureError",
    "MalformedWebhookError",
    "RecentIds",
    "StaleTimestampError",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookVerifier",
    "aiohttp_handler",
    "decode_secret",
    "verify",
]

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 300.0  # seconds either way, as the Standard Webhooks libraries do
SECRET_PREFIX = "whsec_"


class InvalidSignatureError(WebhookVerificationError):
    """No signature on the webhook matches any of the secrets."""


class StaleTimestampError(WebhookVerificationError):
    """The webhook's timestamp is too far from now (a replay, or a badly wrong clock)."""


class MalformedWebhookError(WebhookVerificationError):
    """The webhook lacks required headers, or its body is not an event."""


@dataclass(frozen=True)
class WebhookEvent:
    """One verified notification: `{"type": "instance.<event>", "timestamp", "data"}`."""

    id: str  # webhook-id; for legacy-only deliveries without one, a hash of the body
    type: str
    data: dict[str, Any]
    sent_at: datetime  # the delivery attempt's timestamp (fresh on every retry)
    scheme: Literal["standard", "legacy"]
    payload: dict[str, Any] = field(repr=False)
    raw_body: bytes = field(repr=False)

    @property
    def instance_id(self) -> str | None:
        value = self.data.get("id")
        return value if isinstance(value, str) else None

    @property
    def status(self) -> str | None:
        value = self.data.get("status")
        return value if isinstance(value, str) else None

    @property
    def sequence(self) -> int | None:
        """Per-instance order: deliveries may arrive out of order after retries."""
        value = self.data.get("sequence")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret (the prefix is optional)."""
    text = secret.strip()
    text = text.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is `whsec_` followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


class WebhookVerifier:
    """Verifies deliveries against one or more secrets; `clock` is unix seconds."""

    def __init__(
        self,
        secrets: str | Iterable[str],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        accept_legacy: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [secrets] if isinstance(secrets, str) else list(secrets)
        self._keys = tuple(decode_secret(secret) for secret in names)
        # The legacy header's keys: each secret as written (the earlier service), then the
        # decoded key (this service before it matched the earlier one).
        self._legacy_keys = tuple(s.strip().encode() for s in names) + self._keys
        if not self._keys:
            raise ValueError("at least one webhook secret is required")
        if tolerance <= 0:
            raise ValueError("tolerance must be positive")
        self.tolerance = tolerance
        self.accept_legacy = accept_legacy
        self._clock = clock

    def __repr__(self) -> str:  # never the keys
        return f"WebhookVerifier({len(self._keys)} secret(s), tolerance={self.tolerance:g}s)"

    def verify(self, headers: Mapping[str, str], body: bytes | str) -> WebhookEvent:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        lowered = _lowered(headers)
        if "webhook-signature" in lowered or "webhook-id" in lowered:
            message_id, sent_at = self._verify_standard(lowered, raw)
            scheme: Literal["standard", "legacy"] = "standard"
        elif self.accept_legacy and "x-webhook-signature" in lowered:
            sent_at = self._verify_legacy(lowered, raw)
            message_id = "sha256:" + hashlib.sha256(raw).hexdigest()
            scheme = "legacy"
        else:
            raise MalformedWebhookError("no webhook-signature header")
        return _parse_event(message_id, raw, sent_at, scheme)

    def _verify_standard(self, headers: dict[str, str], body: bytes) -> tuple[str, int]:
        message_id = headers.get("webhook-id", "")
        signatures = headers.get("webhook-signature", "")
        if not message_id or not signatures:
            raise MalformedWebhookError("webhook-id and webhook-signature are both required")
        timestamp = self._timestamp(headers.get("webhook-timestamp"), "webhook-timestamp")
        signed = f"{message_id}.{timestamp}.".encode() + body
        expected = [
            base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) for key in self._keys
        ]
        for entry in signatures.split():
            version, _, signature = entry.partition(",")
            if version != "v1":
                continue
            given = signature.encode()
            # Compare with every key, no early exit, so timing says nothing about which one.
            matched = False
            for candidate in expected:
                matched |= hmac.compare_digest(given, candidate)
            if matched:
                self._check_fresh(timestamp)
                return message_id, timestamp
        raise InvalidSignatureError()

    def _verify_legacy(self, headers: dict[str, str], body: bytes) -> int:
        scheme, _, given = headers.get("x-webhook-signature", "").partition("=")
        if scheme != "sha256" or not given:
            raise MalformedWebhookError("X-Webhook-Signature is not sha256=<hex>")
        timestamp = self._timestamp(headers.get("x-webhook-timestamp"), "X-Webhook-Timestamp")
        matched = False
        for key in self._legacy_keys:
            candidate = hmac.new(key, body, hashlib.sha256).hexdigest()
            matched |= hmac.compare_digest(given.strip().lower().encode(), candidate.encode())
        if not matched:
            raise InvalidSignatureError()
        self._check_fresh(timestamp)
        return timestamp

    @staticmethod
    def _timestamp(value: str | None, name: str) -> int:
        if value is None or not value.strip().isdigit():
            raise MalformedWebhookError(f"{name} must be unix seconds")
        return int(value.strip())

    def _check_fresh(self, timestamp: int) -> None:
        skew = self._clock() - timestamp
        if abs(skew) > self.tolerance:
            direction = "old" if skew > 0 else "in the future"
            raise StaleTimestampError(
                f"the webhook timestamp is {abs(skew):.0f}s {direction} "
                f"(tolerance {self.tolerance:g}s)"
            )


def _parse_event(
    message_id: str, body: bytes, timestamp: int, scheme: Literal["standard", "legacy"]
) -> WebhookEvent:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedWebhookError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedWebhookError("the body is not a JSON object")
    kind, data = payload.get("type"), payload.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise MalformedWebhookError("the body has no `type` string and `data` object")
    return WebhookEvent(
        id=message_id,
        type=kind,
        data=data,
        sent_at=datetime.fromtimestamp(timestamp, tz=UTC),
        scheme=scheme,
        payload=payload,
        raw_body=body,
    )


def verify(
    headers: Mapping[str, str],
    raw_body: bytes | str,
    secrets: str | Iterable[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    accept_legacy: bool = True,
    now: float | None = None,
) -> WebhookEvent:
    """Verify one delivery; answer its event or raise a `WebhookVerificationError`."""
    clock = time.time if now is None else (lambda: now)
    verifier = WebhookVerifier(
        secrets, tolerance=tolerance, accept_legacy=accept_legacy, clock=clock
    )
    return verifier.verify(headers, raw_body)


class RecentIds:
    """Ids seen lately: at most `max_size` (oldest forgotten first), each for `ttl` seconds.

    The default day covers the service's retries of an unacknowledged delivery for the
    first hours, when duplicates are likely; memory stays bounded whatever the traffic.
    """

    def __init__(
        self,
        *,
        max_size: int = 10_000,
        ttl: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1 or ttl <= 0:
            raise ValueError("max_size and ttl must be positive")
        self.max_size = max_size
        self.ttl = ttl
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._expiry)

    def __contains__(self, item: object) -> bool:
        self._expire(self._clock())
        return item in self._expiry

    def add(self, item: str) -> bool:
        """Remember `item`; answer False if it was already remembered (a duplicate)."""
        now = self._clock()
        self._expire(now)
        if item in self._expiry:
            return False
        self._expiry[item] = now + self.ttl
        while len(self._expiry) > self.max_size:
            self._expiry.popitem(last=False)
        return True

    def discard(self, item: str) -> None:
        self._expiry.pop(item, None)

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order (one ttl for all), so expired ids are at the front.
        while self._expiry:
            oldest, expires_at = next(iter(self._expiry.items()))
            if expires_at > now:
                return
            del self._expiry[oldest]


EventCallback = Callable[[WebhookEvent], Awaitable[object] | object]


class WebhookReceiver:
    """Verify, drop duplicates, then hand each new event to `callback` (sync or async).

    If the callback raises, the id is forgotten again so the service's retry is processed.
    """

    def __init__(
        self,
        verifier: WebhookVerifier,
        callback: EventCallback,
        *,
        recent: RecentIds | None = None,
    ) -> None:
        self.verifier = verifier
        self.callback = callback
        self.recent = recent if recent is not None else RecentIds()

    async def receive(self, headers: Mapping[str, str], body: bytes | str) -> WebhookEvent | None:
        """Answer the event, or None for a duplicate; raise `WebhookVerificationError`."""
        event = self.verifier.verify(headers, body)
        if not self.recent.add(event.id):
            log.debug("webhook duplicate dropped: %s", event.id)
            return None
        try:
            result = self.callback(event)
            if inspect.isawaitable(result):
                await result
        except BaseException:
            self.recent.discard(event.id)
            raise
        return event

    async def handle_aiohttp(self, request: web.Request) -> web.Response:
        """An aiohttp handler: 200 for new and duplicate events, 400 for malformed ones,
        401 for bad signatures or stale timestamps, 500 if the callback fails (the
        service then retries later)."""
        body = await request.read()
        try:
            event = await self.receive(request.headers, body)
        except MalformedWebhookError as exc:
            log.warning("webhook rejected (400): %s", exc.message)
            return web.Response(status=400, text=exc.message)
        except WebhookVerificationError as exc:
            log.warning("webhook rejected (401): %s", exc.message)
            return web.Response(status=401, text=exc.message)
        except Exception:
            log.exception("webhook callback failed")
            return web.Response(status=500, text="callback failed")
        return web.Response(status=200, text="ok" if event is not None else "duplicate")


def aiohttp_handler(
    secrets: str | Iterable[str],
    callback: EventCallback,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    accept_legacy: bool = True,
    recent: RecentIds | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp route handler that verifies, dedupes and calls `callback`:

    app.router.add_post("/webhooks", aiohttp_handler(secret, on_event))
    """
    verifier = WebhookVerifier(secrets, tolerance=tolerance, accept_legacy=accept_legacy)
    return WebhookReceiver(verifier, callback, recent=recent).handle_aiohttp
