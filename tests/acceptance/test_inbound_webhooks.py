"""`POST /webhooks/novita` over real HTTP: verified, stored before acknowledged, once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from tests.plugins.service import INBOUND_SECRET, ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed, stored, until


async def test_signed_event_is_stored_then_acknowledged(service: ServiceUnderTest) -> None:
    raw, headers = signed(service, event())
    status, body = await post(service, raw, headers)
    assert status == 200 and body == {"received": True, "duplicate": False}
    rows = await stored(service)
    assert len(rows) == 1
    assert rows[0]["webhook_id"] == headers["webhook-id"]
    assert rows[0]["provider_instance_id"] == "0123456789abcdef"
    assert rows[0]["processed_at"] is None


async def test_duplicate_webhook_id_is_acknowledged_and_stored_once(
    service: ServiceUnderTest,
) -> None:
    raw, headers = signed(service, event())
    results = await asyncio.gather(*(post(service, raw, headers) for _ in range(5)))
    assert all(status == 200 for status, _ in results)
    assert sum(not body["duplicate"] for _, body in results) == 1
    assert len(await stored(service)) == 1


async def test_unknown_event_types_are_stored_and_acknowledged(service: ServiceUnderTest) -> None:
    raw, headers = signed(service, {"type": "account.balance_low", "data": {"usd": 1}})
    status, _ = await post(service, raw, headers)
    assert status == 200
    assert (await stored(service))[0]["event_type"] == "account.balance_low"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", "no webhook-signature entry matches"),
        ("secret", "no webhook-signature entry matches"),
        ("stale", "old"),
        ("future", "future"),
        ("no-comma", "without a comma"),
        ("bad-base64", "not base64"),
        ("timestamp-text", "not a whole number"),
        ("missing", "missing header"),
    ],
)
async def test_unverifiable_webhooks_get_401_with_the_reason(
    service: ServiceUnderTest, tamper: str, reason: str
) -> None:
    now = service.clock.now().timestamp()
    raw, headers = signed(
        service,
        event(),
        secret="whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0wMQ=="
        if tamper == "secret"
        else INBOUND_SECRET,
        at=now - 400 if tamper == "stale" else now + 400 if tamper == "future" else None,
    )
    if tamper == "body":
        raw = raw.replace(b"running", b"exited!")
    elif tamper == "no-comma":
        headers["webhook-signature"] = "v1abc"
    elif tamper == "bad-base64":
        headers["webhook-signature"] = "v1,***"
    elif tamper == "timestamp-text":
        headers["webhook-timestamp"] = "soon"
    elif tamper == "missing":
        del headers["webhook-signature"]
    status, body = await post(service, raw, headers)
    assert status == 401
    assert body["error"]["code"] == "INVALID_SIGNATURE"
    assert reason in body["error"]["message"]
    assert await stored(service) == [], "nothing unverified is stored"


@pytest.mark.parametrize(
    "payload",
    [
        b"{nope",
        b"[]",
        {"data": {}},
        {"type": "x"},
        {"type": "x", "data": []},
        {"type": "x", "data": {"instanceId": 5}},
    ],
)
async def test_invalid_envelopes_get_400(service: ServiceUnderTest, payload: Any) -> None:
    raw, headers = signed(service, payload)
    status, body = await post(service, raw, headers)
    assert status == 400
    assert body["error"]["code"] == "MALFORMED_REQUEST"


async def test_a_nul_character_anywhere_gets_400_and_an_escaped_backslash_does_not(
    service: ServiceUnderTest,
) -> None:
    """PostgreSQL's jsonb cannot store NUL: refused up front, however deep it hides."""
    deep = b'{"type":"x","data":{"d":' + b"[" * 29 + b'"\\u0000"' + b"]" * 29 + b"}}"
    for payload in ({"type": "x", "data": {"note": "a\x00b"}}, deep):
        raw, headers = signed(service, payload)
        status, body = await post(service, raw, headers)
        assert status == 400, body
        assert "NUL" in body["error"]["message"]
    # Deeper than any event needs (and than Python's recursion limit): refused as such.
    deeper = b'{"type":"x","data":{"d":' + b"[" * 1000 + b'"\\u0000"' + b"]" * 1000 + b"}}"
    status, body = await post(service, *signed(service, deeper))
    assert status == 400 and "deeper than" in body["error"]["message"]
    raw, headers = signed(service, {"type": "x", "data": {"note": "\\u0000 is text"}})
    assert (await post(service, raw, headers))[0] == 200
    assert len(await stored(service)) == 1


async def test_oversized_body_gets_413(service: ServiceUnderTest) -> None:
    raw, headers = signed(service, {"type": "x", "data": {"blob": "x" * 300_000}})
    status, _ = await post(service, raw, headers)
    assert status == 413


async def test_full_queue_answers_503_with_retry_after(service: ServiceUnderTest) -> None:
    """While the writer cannot commit, queued events wait and the overflow is refused."""
    from service.ingest import InboxWriter

    database = service.resources.database
    writer = InboxWriter(database, service.clock, max_queue=1)
    writer.start()
    original = service.resources.inbox
    object.__setattr__(service.resources, "inbox", writer)
    try:
        async with database.transaction() as conn:
            # Hold the write lock: the writer's first batch waits behind it.
            if database.is_sqlite:
                await conn.execute(sa.text("DELETE FROM leases WHERE 1 = 0"))
            else:
                await conn.execute(sa.text("LOCK TABLE inbound_webhooks IN EXCLUSIVE MODE"))
            first = asyncio.create_task(post(service, *signed(service, event())))
            # The writer has taken it (queue empty again) and is blocked on the lock; it
            # starts no second batch beside it for a single event...
            await until(lambda: writer.submitted == 1 and writer.backlog == 0)
            second = asyncio.create_task(post(service, *signed(service, event())))
            await until(lambda: writer.backlog == 1)  # ...so this one waits in the full queue
            status, body, headers = await service.call(
                "POST",
                "/webhooks/novita",
                auth=False,
                data=signed(service, event())[0],
                headers=signed(service, event())[1],
            )
            assert status == 503
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["code"] == "INGEST_BUSY"
        assert (await first)[0] == 200 and (await second)[0] == 200
    finally:
        object.__setattr__(service.resources, "inbox", original)
        await writer.stop()
    assert len(await stored(service)) == 2, "both queued events were stored, none lost"
