"""Delivery headers verify with the `standardwebhooks` package and the legacy sha256 header."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.notifications.signing import (
    USER_AGENT,
    SigningKeys,
    delivery_headers,
    encode_body,
)
from service.settings import decode_webhook_secret

SECRET = "whsec_" + base64.b64encode(b"unit-test-signing-key-0123456789").decode()
KEY = decode_webhook_secret(SECRET)


def headers_for(
    body: bytes, message_id: str = "evt_1", timestamp: int | None = None
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    keys = SigningKeys.from_secret(SECRET)
    return delivery_headers(keys=keys, message_id=message_id, timestamp=stamp, body=body)


def test_standard_webhooks_receivers_verify_the_signature() -> None:
    body = encode_body({"type": "instance.ready", "data": {"id": "inst_1", "name": "ü"}})
    payload = Webhook(SECRET).verify(body, headers_for(body))
    assert payload["data"]["name"] == "ü"


def test_a_changed_body_or_id_does_not_verify() -> None:
    body = encode_body({"type": "instance.ready"})
    headers = headers_for(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "evt_2"})


def test_legacy_header_is_hex_hmac_of_the_body_keyed_with_the_secret_as_written() -> None:
    """As the earlier service did: a receiver written for it checks HMAC(secret, body) with
    the configured secret string itself, `whsec_` prefix included, nothing decoded."""
    body = b'{"a":1}'
    headers = headers_for(body, timestamp=1_700_000_000)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == f"sha256={expected}"
    assert expected != hmac.new(KEY, body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Timestamp"] == headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-id"] == "evt_1"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT


def test_headers_never_carry_the_secret() -> None:
    rendered = repr(headers_for(b"{}"))
    assert SECRET not in rendered
    assert SECRET.removeprefix("whsec_") not in rendered


def test_signing_keys_never_show_in_a_repr() -> None:
    keys = SigningKeys.from_secret(SECRET)
    assert SECRET not in repr(keys) and "unit-test-signing-key" not in repr(keys)
