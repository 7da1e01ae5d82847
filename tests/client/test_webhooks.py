"""The receiver helper: signatures made by the `standardwebhooks` reference package are
accepted; tampered, stale, malformed and wrongly-keyed ones are not; the legacy header
works alone; rotation accepts any listed secret; duplicates are dropped (bounded, TTL)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from novita_lifecycle_client.webhooks import (
    InvalidSignatureError,
    MalformedWebhookError,
    RecentIds,
    StaleTimestampError,
    WebhookEvent,
    WebhookReceiver,
    WebhookVerifier,
    aiohttp_handler,
    decode_secret,
    verify,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_b3RoZXItc2VjcmV0LWZvci1yb3RhdGlvbi10ZXN0cw=="
NOW = 1_800_000_000


def payload(status: str = "ready", sequence: int = 4) -> bytes:
    data = {"id": "inst_1", "status": status, "sequence": sequence}
    event = {"type": f"instance.{status}", "timestamp": "2027-01-15T08:00:00Z", "data": data}
    return json.dumps(event, separators=(",", ":")).encode()


def signed(
    body: bytes, *, secret: str = SECRET, msg_id: str = "evt_1", at: int = NOW
) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(at, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(at), "webhook-signature": signature}


def legacy(
    body: bytes, *, secret: str = SECRET, at: int = NOW, decoded: bool = False
) -> dict[str, str]:
    """The earlier service's header: keyed with the secret string as written (`decoded`:
    as this service's first releases keyed it, with the decoded key)."""
    key = decode_secret(secret) if decoded else secret.encode()
    digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": f"sha256={digest}", "X-Webhook-Timestamp": str(at)}


def test_a_reference_signature_is_accepted_and_parsed() -> None:
    body = payload()
    event = verify(signed(body), body, SECRET, now=NOW)
    assert (event.id, event.type, event.scheme) == ("evt_1", "instance.ready", "standard")
    assert (event.instance_id, event.status, event.sequence) == ("inst_1", "ready", 4)
    assert event.sent_at == datetime.fromtimestamp(NOW, tz=UTC)
    assert event.raw_body == body


def test_header_names_are_case_insensitive_and_str_bodies_work() -> None:
    body = payload()
    headers = {key.upper(): value for key, value in signed(body).items()}
    assert verify(headers, body.decode(), SECRET, now=NOW).id == "evt_1"


def test_any_valid_v1_entry_among_several_is_enough() -> None:
    body = payload()
    headers = signed(body)
    headers["webhook-signature"] = f"v2,abc v1,bm9wZQ== {headers['webhook-signature']}"
    assert verify(headers, body, SECRET, now=NOW).id == "evt_1"


def test_during_rotation_any_of_the_secrets_verifies() -> None:
    body = payload()
    verifier = WebhookVerifier([OTHER, SECRET], clock=lambda: NOW)
    assert verifier.verify(signed(body, secret=SECRET), body).id == "evt_1"
    assert verifier.verify(signed(body, secret=OTHER), body).id == "evt_1"
    assert SECRET not in repr(verifier)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: (h, b.replace(b"ready", b"faild")), id="body"),
        pytest.param(lambda h, b: ({**h, "webhook-id": "evt_2"}, b), id="id"),
        pytest.param(lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b), id="timestamp"),
        pytest.param(lambda h, b: ({**h, "webhook-signature": "v1,AAAA"}, b), id="signature"),
        pytest.param(
            lambda h, b: (
                {**h, "webhook-signature": h["webhook-signature"].replace("v1", "v2")},
                b,
            ),
            id="version",
        ),
        pytest.param(lambda h, b: (signed(b, secret=OTHER), b), id="other-secret"),
    ],
)
def test_tampered_deliveries_are_rejected(tamper: Any) -> None:
    body = payload()
    headers, changed = tamper(signed(body), body)
    with pytest.raises(InvalidSignatureError):
        verify(headers, changed, SECRET, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, 3600])
def test_stale_or_future_timestamps_are_rejected(skew: int) -> None:
    body = payload()
    with pytest.raises(StaleTimestampError):
        verify(signed(body, at=NOW - skew), body, SECRET, now=NOW)


def test_the_tolerance_is_configurable() -> None:
    body = payload()
    headers = signed(body, at=NOW - 90)
    assert verify(headers, body, SECRET, now=NOW).id == "evt_1"
    with pytest.raises(StaleTimestampError):
        verify(headers, body, SECRET, now=NOW, tolerance=60)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({}, payload(), id="no-signature"),
        pytest.param({"webhook-signature": "v1,x"}, payload(), id="no-id"),
        pytest.param({**signed(payload()), "webhook-timestamp": "soon"}, payload(), id="bad-ts"),
        pytest.param(signed(b"not json"), b"not json", id="not-json"),
        pytest.param(signed(b"[1]"), b"[1]", id="not-an-object"),
        pytest.param(signed(b'{"type":"x"}'), b'{"type":"x"}', id="no-data"),
        pytest.param({"X-Webhook-Signature": "md5=abc"}, payload(), id="legacy-scheme"),
    ],
)
def test_malformed_deliveries_are_rejected(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(MalformedWebhookError):
        verify(headers, body, SECRET, now=NOW)


def test_the_legacy_header_verifies_alone() -> None:
    body = payload()
    event = verify(legacy(body), body, SECRET, now=NOW)
    assert event.scheme == "legacy" and event.type == "instance.ready"
    assert event.id == "sha256:" + hashlib.sha256(body).hexdigest()
    with pytest.raises(InvalidSignatureError):
        verify(legacy(body, secret=OTHER), body, SECRET, now=NOW)
    with pytest.raises(StaleTimestampError):
        verify(legacy(body, at=NOW - 600), body, SECRET, now=NOW)
    with pytest.raises(MalformedWebhookError):
        verify(legacy(body), body, SECRET, now=NOW, accept_legacy=False)


def test_the_legacy_header_keyed_with_the_decoded_key_still_verifies() -> None:
    body = payload()
    event = verify(legacy(body, decoded=True), body, SECRET, now=NOW)
    assert event.scheme == "legacy"
    with pytest.raises(InvalidSignatureError):
        verify(legacy(body, secret=OTHER, decoded=True), body, SECRET, now=NOW)


def test_a_bad_standard_signature_is_not_rescued_by_a_good_legacy_one() -> None:
    body = payload()
    headers = {**signed(body), "webhook-signature": "v1,AAAA", **legacy(body)}
    with pytest.raises(InvalidSignatureError):
        verify(headers, body, SECRET, now=NOW)


def test_a_secret_that_is_not_base64_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        WebhookVerifier("whsec_not base64!")


def test_recent_ids_are_bounded_and_expire() -> None:
    now = [0.0]
    recent = RecentIds(max_size=3, ttl=10, clock=lambda: now[0])
    assert recent.add("a") and not recent.add("a")
    for item in "bcd":
        assert recent.add(item)
    assert len(recent) == 3 and "a" not in recent  # the oldest made room
    now[0] = 10.0
    assert len(recent) == 0
    assert recent.add("b")


async def test_the_receiver_drops_duplicates_and_forgets_ids_whose_callback_failed() -> None:
    seen: list[WebhookEvent] = []
    failures = [RuntimeError("database down")]

    async def callback(event: WebhookEvent) -> None:
        if failures:
            raise failures.pop()
        seen.append(event)

    receiver = WebhookReceiver(WebhookVerifier(SECRET, clock=lambda: NOW), callback)
    body = payload()
    with pytest.raises(RuntimeError):
        await receiver.receive(signed(body), body)
    first = await receiver.receive(signed(body), body)  # the retry is processed
    again = await receiver.receive(signed(body), body)
    assert first is not None and again is None
    assert [event.id for event in seen] == ["evt_1"]


@pytest.fixture
async def receiver_url() -> AsyncIterator[tuple[str, list[WebhookEvent]]]:
    events: list[WebhookEvent] = []
    app = web.Application()
    app.router.add_post("/hook", aiohttp_handler([OTHER, SECRET], events.append))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", events
    finally:
        await runner.cleanup()


async def test_the_aiohttp_handler_answers_as_documented(
    receiver_url: tuple[str, list[WebhookEvent]],
) -> None:
    url, events = receiver_url
    body = payload()
    now = int(datetime.now(tz=UTC).timestamp())
    async with aiohttp.ClientSession() as http:

        async def post(headers: dict[str, str], data: bytes = body) -> tuple[int, str]:
            async with http.post(url, data=data, headers=headers) as response:
                return response.status, await response.text()

        assert await post(signed(body, at=now)) == (200, "ok")
        assert await post(signed(body, at=now)) == (200, "duplicate")
        assert (await post(signed(body, at=now, msg_id="evt_9", secret=OTHER)))[0] == 200
        assert (await post(signed(body, at=now - 3600, msg_id="evt_old")))[0] == 401
        assert (await post({**signed(body, at=now), "webhook-signature": "v1,AAAA"}))[0] == 401
        assert (await post({}))[0] == 400
    assert [event.id for event in events] == ["evt_1", "evt_9"]
