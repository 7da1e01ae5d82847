"""Hostile input, route by route: bodies, query strings, paths, headers and signed webhooks
built to break the service (deep nesting, huge and Unicode numbers, lone surrogates, NUL,
oversize, bad cursors and times) each get the right 4xx, never a 5xx, on SQLite and on
PostgreSQL; nothing hostile is stored; afterwards `/health` and every stored instance (by
id, in every list page, with its events) still read fine."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import yarl

from service.db.models import inbound_webhooks, instances
from service.settings import decode_webhook_secret
from service.signatures import sign
from tests.plugins.service import API_KEY, INBOUND_SECRET, ServiceUnderTest

DEEP = b"[" * 3000 + b"]" * 3000
HUGE_INT = b"1" * 5000
SURROGATE = b'"\\ud800"'  # a lone high surrogate, as a JSON escape
LOW_SURROGATE = b'"x\\udc80y"'
NUL = b'"a\\u0000b"'
TINY = b"1e-20000"  # parses as 0.0; PostgreSQL's numeric cannot hold it
INSTANCE_ID = "{id}"  # replaced by the id of the instance every test creates first

CREATE = {
    "name": "hostile-target",
    "productName": "RTX 4090 24GB",
    "templateId": "212",
    "region": "AS-SGP-02",
    "regions": ["AS-SGP-02"],
    "imageAuthId": "auth-1",
    "envs": [{"key": "K", "value": "v"}],
    "labels": {"team": "vision"},
    "readiness": {"path": "/"},
}
CREATE_STRINGS = {  # every string a create body holds, as a path to it
    "name": ("name",),
    "productName": ("productName",),
    "productId": ("productId",),
    "templateId": ("templateId",),
    "imageUrl": ("imageUrl",),
    "imageAuthId": ("imageAuthId",),
    "region": ("region",),
    "regions[0]": ("regions", 0),
    "envs[0].key": ("envs", 0, "key"),
    "envs[0].value": ("envs", 0, "value"),
    "webhookUrl": ("webhookUrl",),
    "labels.team": ("labels", "team"),
    "readiness.path": ("readiness", "path"),
}
CREATE_NUMBERS = ("gpuNum", "rootfsSize")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # already percent-encoded; {id} is the stored instance
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def with_raw(document: dict[str, Any], where: tuple[str | int, ...], raw: bytes) -> bytes:
    """`document` as JSON with the value at `where` replaced by the raw JSON text `raw`
    (what json.dumps cannot write: lone surrogates, 5,000-digit numbers)."""
    marker = "__RAW_VALUE__"
    copy = json.loads(json.dumps(document))
    target = copy
    for step in where[:-1]:
        target = target.setdefault(step, {}) if isinstance(step, str) else target[step]
    target[where[-1]] = marker
    return json.dumps(copy).encode().replace(f'"{marker}"'.encode(), raw)


def body_cases() -> list[Case]:
    cases: list[Case] = []
    create = "/api/instances"
    for field_name, where in CREATE_STRINGS.items():
        cases += [
            Case(
                f"create {field_name} lone surrogate",
                "POST",
                create,
                400,
                with_raw(CREATE, where, SURROGATE),
            ),
            Case(
                f"create {field_name} lone low surrogate",
                "POST",
                create,
                400,
                with_raw(CREATE, where, LOW_SURROGATE),
            ),
            Case(f"create {field_name} NUL", "POST", create, 422, with_raw(CREATE, where, NUL)),
            Case(
                f"create {field_name} nested 3000 deep",
                "POST",
                create,
                400,
                with_raw(CREATE, where, DEEP),
            ),
            Case(
                f"create {field_name} as a number",
                "POST",
                create,
                422,
                with_raw(CREATE, where, b"5")
                if field_name != "templateId"
                else with_raw(CREATE, where, b"-5"),
            ),
        ]
    for number in CREATE_NUMBERS:
        for label, raw, status in (
            ("5,000 digits", HUGE_INT, 400),
            ("2^64", b"18446744073709551616", 422),
            ("2^63", b"9223372036854775808", 422),
            ("-2^64", b"-18446744073709551616", 422),
            ("2^53", b"9007199254740992", 422),
            ("1e400", b"1e400", 400),
            ("1e-20000", TINY, 422),
            ("true", b"true", 422),
            ("a string of digits", b'"2"', 422),
            ("Unicode digits", '"²"'.encode(), 422),
            ("a fraction", b"2.5", 422),
            ("NaN", b"NaN", 400),
        ):
            cases.append(
                Case(
                    f"create {number} {label}",
                    "POST",
                    create,
                    status,
                    with_raw(CREATE, (number,), raw),
                )
            )
    cases += [
        Case(
            "create labels key NUL",
            "POST",
            create,
            422,
            with_raw(CREATE, ("labels",), b'{"a\\u0000": "x"}'),
        ),
        Case(
            "create labels key with a quote",
            "POST",
            create,
            422,
            with_raw(CREATE, ("labels",), b'{"a\\"b": "x"}'),
        ),
        Case(
            "create labels key with a newline",
            "POST",
            create,
            422,
            with_raw(CREATE, ("labels",), b'{"team\\n": "x"}'),
        ),
        Case(
            "create labels key surrogate",
            "POST",
            create,
            400,
            with_raw(CREATE, ("labels",), b'{"\\ud800": "x"}'),
        ),
        Case(
            "create ports Unicode digits",
            "POST",
            create,
            422,
            with_raw(CREATE, ("ports",), '"²²/http"'.encode()),
        ),
        Case(
            "create ports huge",
            "POST",
            create,
            422,
            with_raw(CREATE, ("ports",), b'"' + b"9" * 5000 + b'/http"'),
        ),
        Case("100,000 [", "POST", create, 400, b"[" * 100_000),
        Case("100,000 {", "POST", create, 400, b'{"a":' * 100_000),
        Case("deep object", "POST", create, 400, b'{"a":' * 3000 + b"1" + b"}" * 3000),
        Case("invalid UTF-8", "POST", create, 400, b'{"name": "\xff\xfe"}'),
        Case("raw surrogate bytes", "POST", create, 400, b'{"name": "\xed\xa0\x80"}'),
        Case(
            "oversize body",
            "POST",
            create,
            413,
            with_raw(CREATE, ("name",), b'"' + b"x" * 2_000_000 + b'"'),
        ),
        Case("a JSON array", "POST", create, 400, b"[1, 2]"),
        Case("a JSON string", "POST", create, 400, b'"\\u0000"'),
        Case("a huge top-level number", "POST", create, 400, HUGE_INT),
        Case("empty", "POST", create, 400, b""),
        Case(
            "productName and imageUrl null",
            "POST",
            create,
            422,
            json.dumps({"name": "x", "productName": None, "imageUrl": None}).encode(),
        ),
    ]
    one = f"/api/instances/{INSTANCE_ID}"
    for label, raw, status in (
        ("a number", b"9264624", 422),
        ("zero", b"0", 422),
        ("year 1 at +14:00", b'"0001-01-01T00:00:00+14:00"', 422),
        ("year 9999 at -14:00", b'"9999-12-31T23:59:59-14:00"', 422),
        ("no zone", b'"2026-01-01T00:00:00"', 422),
        ("Unicode digits", '"\uff12\uff10\uff12\uff16-01-01T00:00:00Z"'.encode(), 422),
        ("lone surrogate", SURROGATE, 400),
        ("NUL", NUL, 422),
        ("nested 3000 deep", DEEP, 400),
        ("2^64", b"18446744073709551616", 422),
    ):
        cases.append(
            Case(
                f"last-used {label}",
                "PUT",
                f"{one}/last-used",
                status,
                b'{"lastUsedAt": ' + raw + b"}",
            )
        )
    for label, raw, status in (
        ("idleMinutes 2^64", b'{"autoStop": {"idleMinutes": 18446744073709551616}}', 422),
        ("idleMinutes true", b'{"autoStop": {"idleMinutes": true}}', 422),
        ("idleMinutes 5,000 digits", b'{"autoStop": {"idleMinutes": ' + HUGE_INT + b"}}", 400),
        (
            "action surrogate",
            b'{"autoStop": {"idleMinutes": 5, "action": ' + SURROGATE + b"}}",
            400,
        ),
        ("action NUL", b'{"onInterruption": {"action": ' + NUL + b"}}", 422),
        ("maxAttempts 2^63", b'{"onInterruption": {"maxAttempts": 9223372036854775808}}', 422),
        ("deep", b'{"autoStop": ' + DEEP + b"}", 400),
    ):
        cases.append(Case(f"policies {label}", "PATCH", one, status, raw))
    redeliver = "/api/notifications/redeliver"
    for label, raw, status in (
        ("since zero", b'{"since": 0}', 422),
        ("since year 1 at +14:00", b'{"since": "0001-01-01T00:00:00+14:00"}', 422),
        ("since surrogate", b'{"since": ' + SURROGATE + b"}", 400),
        ("since NUL", b'{"since": ' + NUL + b"}", 422),
        ("instanceId NUL", b'{"since": "2026-01-01T00:00:00Z", "instanceId": ' + NUL + b"}", 422),
        ("since 2^64", b'{"since": 18446744073709551616}', 422),
    ):
        cases.append(Case(f"redeliver {label}", "POST", redeliver, status, raw))
    for label, raw, status in (
        ("url NUL", b'{"url": ' + NUL + b"}", 422),
        ("url surrogate", b'{"url": ' + SURROGATE + b"}", 400),
        ("url number", b'{"url": 18446744073709551616}', 422),
    ):
        cases.append(
            Case(f"enable target {label}", "POST", "/api/webhook-targets/enable", status, raw)
        )
    return cases


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def query_cases() -> list[Case]:
    events = f"/api/instances/{INSTANCE_ID}/events"
    bad_cursors = {  # label: (cursor, status)
        "deep JSON": (b64(b"[" * 3000 + b"]" * 3000), 422),
        "year 1 at +14:00": (b64(b'["0001-01-01T00:00:00+14:00", "x"]'), 422),
        "naive time": (b64(b'["2026-01-01T00:00:00", "x"]'), 422),
        "id not a string": (b64(b'["2026-01-01T00:00:00+00:00", 18446744073709551616]'), 422),
        "NUL id": (b64(b'["2026-01-01T00:00:00+00:00", "a\\u0000"]'), 422),
        "surrogate": (b64(b'["2026-01-01T00:00:00+00:00", "\\ud800"]'), 422),
        "10,000 characters": ("A" * 10_000, 422),
        "not base64": ("%%%", 422),
        "percent NUL": ("%00", 422),
        # Past the bound on a request head: refused before any route sees it.
        "100,000 [": (b64(b"[" * 100_000), 431),
    }
    cases: list[Case] = []
    for route in ("/api/instances", "/api/notifications"):
        for label, (cursor, status) in bad_cursors.items():
            cases.append(Case(f"{route} cursor {label}", "GET", f"{route}?cursor={cursor}", status))
    for route in ("/api/instances", "/api/notifications", events):
        for label, value in (
            ("superscript two", "%C2%B2"),
            ("Arabic-Indic three", "%D9%A3"),
            ("fullwidth one", "%EF%BC%91"),
            ("2^64", "18446744073709551616"),
            ("5,000 digits", "9" * 5000),
            ("negative", "-1"),
            ("empty", ""),
            ("NUL", "1%00"),
        ):
            cases.append(Case(f"{route} limit {label}", "GET", f"{route}?limit={value}", 422))
    for label, value, status in (
        ("5,000 digits", "9" * 5000, 422),
        ("2^63", "9223372036854775808", 422),
        ("2^31: past every event", "2147483648", 200),
        ("superscript", "%C2%B2", 422),
        ("NUL", "1%00", 422),
        ("negative", "-1", 422),
        ("empty", "", 200),
    ):
        cases.append(Case(f"events cursor {label}", "GET", f"{events}?cursor={value}", status))
    for name in ("name", "region", "product"):
        cases += [
            Case(f"instances {name} NUL", "GET", f"/api/instances?{name}=a%00b", 422),
            Case(
                f"instances {name} surrogate bytes", "GET", f"/api/instances?{name}=%ED%A0%80", 200
            ),
            Case(f"instances {name} very long", "GET", f"/api/instances?{name}={'a' * 5000}", 422),
            Case(f"instances {name} empty", "GET", f"/api/instances?{name}=", 200),
        ]
    for label, value, status in (
        ("a quote in the key", 'a"b:c', 422),
        ("a bracket in the key", "a[0]:c", 422),
        ("a dollar key", "$:c", 422),
        ("NUL key", "%00:c", 422),
        ("NUL value", "team:%00", 422),
        ("surrogate bytes value", "team:%ED%A0%80", 200),
        ("no separator", "team", 422),
        ("empty", "", 200),
        ("equals form", "team=vision", 200),
    ):
        cases.append(
            Case(f"instances label {label}", "GET", f"/api/instances?label={value}", status)
        )
    for label, value, status in (
        ("unknown", "sleeping", 422),
        ("NUL", "pending%00", 422),
        ("empty", "", 200),
        ("empty items", ",,pending,", 200),
    ):
        cases.append(
            Case(f"instances status {label}", "GET", f"/api/instances?status={value}", status)
        )
    cases += [
        Case("notifications status NUL", "GET", "/api/notifications?status=%00", 422),
        Case("notifications status empty", "GET", "/api/notifications?status=", 200),
        Case("notifications instance NUL", "GET", "/api/notifications?instance=%00", 422),
        Case("notifications type NUL", "GET", "/api/notifications?type=a%00", 422),
    ]
    for label, query, status in (
        ("since year 1 at +14:00", "since=0001-01-01T00:00:00%2B14:00", 422),
        ("until year 9999 at -14:00", "until=9999-12-31T23:59:59-14:00", 422),
        ("since huge age", "since=999999w", 422),
        ("since Unicode digits age", "since=%D9%A3d", 422),
        ("since 5,000 digits", f"since={'9' * 5000}", 422),
        ("since NUL", "since=%00", 422),
        ("since empty", "since=", 200),
        ("groupBy NUL", "groupBy=%00", 422),
        ("section NUL", "section=%00", 422),
        ("format NUL", "format=%00", 422),
        ("unknown parameter", "x=1", 422),
    ):
        cases.append(Case(f"usage report {label}", "GET", f"/api/reports/usage?{query}", status))
    cases.append(Case("fleet report at NUL", "GET", "/api/reports/fleet?at=%00", 422))
    for label, query in (
        ("instance NUL", "instance=a%00b"),
        ("label with a quote in the key", "label=a%22b:c"),
        ("label NUL value", "label=team:%00"),
        ("status unknown", "status=sleeping"),
        ("lastEventId superscript", "lastEventId=%C2%B2"),
        ("lastEventId 5,000 digits", f"lastEventId={'9' * 5000}"),
    ):
        cases.append(Case(f"event stream {label}", "GET", f"/api/events?{query}", 422))
    return cases


def path_cases() -> list[Case]:
    cases: list[Case] = []
    for label, key in (
        ("NUL", "a%00b"),
        ("only NUL", "%00"),
        ("surrogate bytes", "%ED%A0%80"),
        ("1,000 characters", "a" * 1000),
        ("5,000 characters", "a" * 5000),
        ("Unicode digits", "%C2%B2"),
    ):
        base = f"/api/instances/{key}"
        cases += [
            Case(f"get {label}", "GET", base, 404),
            Case(f"delete {label}", "DELETE", base, 404),
            Case(f"patch {label}", "PATCH", base, 404, b'{"autoStop": null}'),
            Case(f"events {label}", "GET", f"{base}/events", 404),
            Case(f"start {label}", "POST", f"{base}/start", 404),
            Case(f"last-used {label}", "PUT", f"{base}/last-used", 404),
            Case(f"notification {label}", "GET", f"/api/notifications/{key}", 404),
            Case(f"redeliver {label}", "POST", f"/api/notifications/{key}/redeliver", 404),
            Case(f"report {label}", "GET", f"/api/reports/{key}", 404),
        ]
    return cases


def header_cases() -> list[Case]:
    create = json.dumps({**CREATE, "name": "idem"}).encode()
    return [
        Case(
            "Idempotency-Key too long",
            "POST",
            "/api/instances",
            422,
            create,
            {"Idempotency-Key": "k" * 300},
        ),
        Case(
            "Authorization 60 KB",
            "GET",
            "/api/instances",
            401,
            None,
            {"Authorization": "Bearer " + "x" * 60_000},
        ),
        Case("a 100 KB header", "GET", "/api/instances", 431, None, {"X-Big": "x" * 100_000}),
        Case(
            "a sane request id is echoed, a hostile one replaced",
            "GET",
            "/api/instances",
            200,
            None,
            {"X-Request-ID": "x" * 5000},
        ),
        *[
            Case(
                f"webhook-timestamp {label}",
                "POST",
                "/webhooks/novita",
                401,
                b"{}",
                {"webhook-id": "m1", "webhook-timestamp": value, "webhook-signature": "v1,AAAA"},
            )
            for label, value in (
                ("superscript", "²"),
                ("fullwidth, as UTF-8 bytes", "\uff11\uff17\uff10".encode().decode("latin-1")),
                ("5,000 digits", "9" * 5000),
                ("2^64", "18446744073709551616"),
                ("negative", "-1"),
                ("exponent", "1e9"),
                ("empty", ""),
            )
        ],
    ]


def signed_headers(service: ServiceUnderTest, body: bytes, msg_id: str) -> dict[str, str]:
    """Standard Webhooks headers over the raw bytes, whatever they hold."""
    at = int(service.clock.now().timestamp())
    signature = sign(decode_webhook_secret(INBOUND_SECRET), msg_id, at, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(at), "webhook-signature": signature}


async def send(service: ServiceUnderTest, case: Case, instance_id: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    headers.update(case.headers)
    url = yarl.URL(service.base_url + case.path.replace(INSTANCE_ID, instance_id), encoded=True)
    data = io.BytesIO(case.body) if case.body and len(case.body) > 64_000 else case.body
    async with service.http.request(case.method, url, data=data, headers=headers) as r:
        text = await r.read()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text[:200]


async def run_corpus(service: ServiceUnderTest, cases: list[Case]) -> str:
    instance_id = await stored_instance(service)
    wrong = []
    for case in cases:
        status, body = await send(service, case, instance_id)
        if status != case.status:
            wrong.append(f"{case.name}: {status} (expected {case.status}) {str(body)[:300]}")
        elif 400 <= status < 500 and status != 431:
            error = body["error"]
            assert isinstance(error["message"], str) and error["requestId"], case.name
            if status == 422:
                assert all(item["field"] for item in error["details"]["fields"]), case.name
    assert not wrong, "\n".join(wrong)
    return instance_id


async def stored_instance(service: ServiceUnderTest) -> str:
    status, created, _ = await service.call("POST", "/api/instances", json=CREATE)
    assert status == 202, created
    return str(created["id"])


async def assert_everything_reads(service: ServiceUnderTest, expected_instances: int) -> None:
    status, health, _ = await service.call("GET", "/health", auth=False)
    assert status == 200, health
    seen, cursor = [], None
    while True:
        status, page, _ = await service.call(
            "GET", "/api/instances?limit=1" + (f"&cursor={cursor}" if cursor else "")
        )
        assert status == 200, page
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == expected_instances, "nothing hostile was stored"
    for instance_id in seen:
        status, one, _ = await service.call("GET", f"/api/instances/{instance_id}")
        assert status == 200, one
        status, events, _ = await service.call("GET", f"/api/instances/{instance_id}/events")
        assert status == 200 and events["items"], events
    status, notifications, _ = await service.call("GET", "/api/notifications")
    assert status == 200, notifications
    async with service.resources.database.read() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(instances))
    assert count == expected_instances


async def test_hostile_bodies_are_refused_and_nothing_is_stored(
    service: ServiceUnderTest,
) -> None:
    await run_corpus(service, body_cases())
    await assert_everything_reads(service, expected_instances=1)


async def test_hostile_query_strings_are_refused(service: ServiceUnderTest) -> None:
    await run_corpus(service, query_cases())
    await assert_everything_reads(service, expected_instances=1)


async def test_hostile_paths_find_nothing(service: ServiceUnderTest) -> None:
    await run_corpus(service, path_cases())
    await assert_everything_reads(service, expected_instances=1)


async def test_hostile_headers_are_refused(service: ServiceUnderTest) -> None:
    await run_corpus(service, header_cases())
    await assert_everything_reads(service, expected_instances=1)


async def test_too_many_headers_get_431_on_the_service(service: ServiceUnderTest) -> None:
    address = urlsplit(service.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        lines = b"".join(b"X-H%d: v\r\n" % n for n in range(1000))
        writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n")
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        assert status_line.split()[1] == b"431"
    finally:
        writer.close()
    await assert_everything_reads(service, expected_instances=0)


async def test_hostile_signed_webhooks_get_400_and_are_not_stored(
    service: ServiceUnderTest,
) -> None:
    envelope = b'{"type": "instance.status_changed", "data": {"instanceId": "abc", "x": %s}}'
    refused = {
        "nested 3000 deep": DEEP,
        "100,000 [": b"[" * 100_000,
        "5,000-digit integer": HUGE_INT,
        "1e400": b"1e400",
        "1e-20000 (PostgreSQL numeric cannot hold it)": TINY,
        "a fraction of 20,000 digits": b"0." + b"0" * 20_000 + b"1",
        "lone surrogate": SURROGATE,
        "lone low surrogate": LOW_SURROGATE,
        "NUL": NUL,
        "NUL in a key": b'{"a\\u0000": 1}',
        "invalid UTF-8": b'"\xff"',
        "NaN": b"NaN",
    }
    wrong = []
    for n, (label, raw) in enumerate(refused.items()):
        body = envelope % raw
        status, answer, _ = await service.call(
            "POST",
            "/webhooks/novita",
            data=body,
            headers=signed_headers(service, body, f"bad-{n}"),
            auth=False,
        )
        if status != 400:
            wrong.append(f"{label}: {status} {str(answer)[:200]}")
    assert not wrong, "\n".join(wrong)
    # Large numbers a double holds are the provider's to send: stored as sent.
    for n, number in enumerate(
        (b"18446744073709551616", b"1e300", b"1e-300", b"-9223372036854775809")
    ):
        body = envelope % number
        status, answer, _ = await service.call(
            "POST",
            "/webhooks/novita",
            data=body,
            headers=signed_headers(service, body, f"good-{n}"),
            auth=False,
        )
        assert status == 200, answer
    async with service.resources.database.read() as conn:
        rows = (await conn.execute(sa.select(inbound_webhooks.c.payload))).all()
    assert len(rows) == 4
    await assert_everything_reads(service, expected_instances=0)
