"""Standard Webhooks signing and verification: the specification's test vector, signatures
made by the reference `standardwebhooks` package, and every way a signature can be wrong."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook

from service.settings import decode_webhook_secret
from service.signatures import SignatureError, sign, verify

# The test vector published with the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = decode_webhook_secret(SPEC_SECRET)
OTHER = decode_webhook_secret(
    "whsec_" + base64.b64encode(b"another-secret-key-32-bytes!!!!!").decode()
)


def check(
    signature: str | None,
    *,
    keys: list[bytes] | None = None,
    body: bytes = SPEC_BODY,
    timestamp: str | None = str(SPEC_TIMESTAMP),
    now: float = SPEC_TIMESTAMP,
    msg_id: str | None = SPEC_ID,
) -> int:
    return verify(
        keys or [KEY],
        msg_id=msg_id,
        timestamp=timestamp,
        signature=signature,
        body=body,
        now=now,
        tolerance=300,
    )


def test_spec_vector_signs_and_verifies() -> None:
    assert sign(KEY, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert check(SPEC_SIGNATURE) == SPEC_TIMESTAMP


def test_signatures_from_the_reference_package_are_accepted() -> None:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(SPEC_TIMESTAMP, tz=UTC)
    header = Webhook(SPEC_SECRET).sign(SPEC_ID, when, SPEC_BODY.decode())
    assert check(header) == SPEC_TIMESTAMP


def test_any_matching_entry_passes_so_secrets_can_rotate() -> None:
    old = sign(OTHER, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert check(f"{old} {SPEC_SIGNATURE}")
    assert check(old, keys=[KEY, OTHER]), "a second configured secret verifies too"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"body": b'{"test": 2432232315}'}, "no webhook-signature entry matches"),
        ({"keys": [OTHER]}, "no webhook-signature entry matches"),
        ({"now": SPEC_TIMESTAMP + 301}, "old"),
        ({"now": SPEC_TIMESTAMP - 301}, "future"),
        ({"timestamp": "yesterday"}, "not a whole number"),
        ({"timestamp": None}, "missing header(s): webhook-timestamp"),
        ({"msg_id": None}, "missing header(s): webhook-id"),
        ({"msg_id": "msg_other"}, "no webhook-signature entry matches"),
    ],
)
def test_wrong_signatures_are_refused_with_the_reason(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(SignatureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(SPEC_SIGNATURE, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("v1g0hM9SsE", "without a comma"),
        ("v1,not*base64!", "not base64"),
        ("v1a,abc=", "no v1 entry"),
        (None, "missing header"),
    ],
)
def test_malformed_signature_headers_are_refused(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        check(header)
