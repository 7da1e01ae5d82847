"""Teams and roles over real HTTP, on SQLite and PostgreSQL: keys issued in the database,
what each role may do (403 naming the role needed), another team's instances answered
as missing (404) in every read, action, list and stream, revocation seen by another app
sharing the database, the key id in the events a key causes, and secrets nowhere but in
the one answer that issues them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from novita_lifecycle_client.sse import messages
from service.app import create_app
from service.auth.keys import digest
from service.auth.roles import Role
from service.db import api_keys as key_store
from service.db import repository as repo
from service.domain import EventSource, Status
from tests.plugins.service import API_KEY, ServiceUnderTest
from tests.support.server import running_server

CREATE = {"name": "trainer", "productName": "RTX 4090 24GB", "templateId": "212"}


@dataclass
class Keys:
    """Keys of team red (one per role) and an operator and a viewer of team blue."""

    secrets: dict[str, str]
    ids: dict[str, str]


async def issue(
    service: ServiceUnderTest, team: str, role: Role, name: str | None = None
) -> tuple[str, str]:
    async with service.resources.database.transaction() as conn:
        created, secret = await key_store.create_key(
            conn, team=team, role=role, name=name, now=service.clock.now()
        )
    return created.id, secret


@pytest.fixture
async def keys(service: ServiceUnderTest) -> Keys:
    found = Keys({}, {})
    for label, team, role in [
        ("viewer", "red", Role.VIEWER),
        ("operator", "red", Role.OPERATOR),
        ("admin", "red", Role.ADMIN),
        ("blue", "blue", Role.OPERATOR),
        ("blue-viewer", "blue", Role.VIEWER),
    ]:
        found.ids[label], found.secrets[label] = await issue(service, team, role)
    return found


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def call(
    service: ServiceUnderTest, secret: str, method: str, path: str, json: Any = None
) -> tuple[int, Any]:
    status, body, _ = await service.call(
        method, path, json=json, headers=bearer(secret), auth=False
    )
    return status, body


async def created_by(service: ServiceUnderTest, secret: str, **extra: Any) -> dict[str, Any]:
    status, body = await call(service, secret, "POST", "/api/instances", {**CREATE, **extra})
    assert status == 202, body
    return body  # type: ignore[no-any-return]


# Per role x route on an instance of the key's own team: the status each role gets.
# 409 means the role was let through and the lifecycle refused (a pending instance).
MATRIX = [
    ("GET", "/api/instances", None, (200, 200, 200)),
    ("GET", "/api/instances/{id}", None, (200, 200, 200)),
    ("GET", "/api/instances/{id}/events", None, (200, 200, 200)),
    ("POST", "/api/instances", CREATE, (403, 202, 202)),
    ("POST", "/api/instances/{id}/start", None, (403, 409, 409)),
    ("POST", "/api/instances/{id}/stop", None, (403, 409, 409)),
    ("POST", "/api/instances/{id}/restart", None, (403, 409, 409)),
    ("PATCH", "/api/instances/{id}", {"autoStop": None}, (403, 200, 200)),
    ("PUT", "/api/instances/{id}/last-used", {}, (403, 200, 200)),
    ("DELETE", "/api/instances/{id}", None, (403, 202, 202)),
    ("GET", "/api/notifications", None, (200, 200, 200)),
    ("POST", "/api/notifications/redeliver", {"since": "2026-01-01T00:00:00Z"}, (403, 202, 202)),
    ("GET", "/api/webhook-targets/disabled", None, (403, 403, 200)),
    ("POST", "/api/webhook-targets/enable", {"url": "https://x.example/h"}, (403, 403, 200)),
    ("GET", "/api/keys", None, (403, 403, 200)),
    ("POST", "/api/keys", {"team": "green", "role": "viewer"}, (403, 403, 201)),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
async def test_each_role_gets_what_its_role_allows(
    service: ServiceUnderTest,
    keys: Keys,
    method: str,
    path: str,
    body: Any,
    expected: tuple[int, int, int],
) -> None:
    for role, status_wanted in zip(("viewer", "operator", "admin"), expected, strict=True):
        instance = await created_by(service, keys.secrets["operator"])
        status, answer = await call(
            service, keys.secrets[role], method, path.format(id=instance["id"]), body
        )
        assert status == status_wanted, (role, answer)
        if status == 403:
            assert answer["error"]["code"] == "FORBIDDEN"
            needed = "admin" if status_wanted == 403 and expected[1] == 403 else "operator"
            assert f"needs the {needed} role" in answer["error"]["message"]


ACTIONS = [
    ("GET", "/api/instances/{id}", None),
    ("GET", "/api/instances/{id}/events", None),
    ("POST", "/api/instances/{id}/start", None),
    ("POST", "/api/instances/{id}/stop", None),
    ("POST", "/api/instances/{id}/restart", None),
    ("PATCH", "/api/instances/{id}", {"autoStop": None}),
    ("PUT", "/api/instances/{id}/last-used", {}),
    ("DELETE", "/api/instances/{id}", None),
]


async def test_another_teams_instance_is_not_found_by_any_route(
    service: ServiceUnderTest, keys: Keys
) -> None:
    red = await created_by(service, keys.secrets["operator"])
    before = await repo.find_instance_fast(service.resources.database, red["id"])
    for method, path, body in ACTIONS:
        for key in ("blue", "blue-viewer"):
            status, answer = await call(
                service, keys.secrets[key], method, path.format(id=red["id"]), body
            )
            expected = 404 if key == "blue" or method == "GET" else 403
            assert status == expected, (method, path, key, answer)
            if status == 404:
                assert answer["error"]["code"] == "INSTANCE_NOT_FOUND"
    after = await repo.find_instance_fast(service.resources.database, red["id"])
    assert after == before, "nothing another team asked changed the instance"


async def test_lists_show_only_the_keys_team_and_admins_see_every_team(
    service: ServiceUnderTest, keys: Keys
) -> None:
    red = await created_by(service, keys.secrets["operator"])
    blue = await created_by(service, keys.secrets["blue"])
    legacy = await created_by(service, API_KEY)  # an API_KEYS key: admin of `default`
    assert (red["team"], blue["team"], legacy["team"]) == ("red", "blue", "default")

    async def listed(secret: str, query: str = "") -> set[str]:
        status, page = await call(service, secret, "GET", f"/api/instances{query}")
        assert status == 200, page
        return {item["id"] for item in page["items"]}

    assert await listed(keys.secrets["viewer"]) == {red["id"]}
    assert await listed(keys.secrets["blue-viewer"]) == {blue["id"]}
    assert await listed(keys.secrets["viewer"], "?team=blue") == set()
    assert await listed(keys.secrets["admin"]) == {red["id"], blue["id"], legacy["id"]}
    assert await listed(API_KEY, "?team=blue") == {blue["id"]}
    status, answer = await call(service, API_KEY, "GET", "/api/instances?team=a%00b")
    assert status == 422 and answer["error"]["details"]["fields"][0]["field"] == "team"


async def test_only_an_admin_names_another_team_when_creating(
    service: ServiceUnderTest, keys: Keys
) -> None:
    own = await created_by(service, keys.secrets["operator"], team="red")
    assert own["team"] == "red"
    status, answer = await call(
        service, keys.secrets["operator"], "POST", "/api/instances", {**CREATE, "team": "blue"}
    )
    assert status == 403 and "needs the admin role" in answer["error"]["message"]
    placed = await created_by(service, keys.secrets["admin"], team="blue")
    assert placed["team"] == "blue"
    status, _ = await call(service, keys.secrets["blue"], "GET", f"/api/instances/{placed['id']}")
    assert status == 200
    for bad in ["", "a" * 65, "a\x00b", "-lead", "sp ace", 7]:
        status, answer = await call(
            service, keys.secrets["admin"], "POST", "/api/instances", {**CREATE, "team": bad}
        )
        assert status == 422, (bad, answer)
        assert answer["error"]["details"]["fields"][0]["field"] == "team"


async def test_idempotency_keys_are_scoped_per_api_key(
    service: ServiceUnderTest, keys: Keys
) -> None:
    headers = {"Idempotency-Key": "same-key"}
    results = []
    for key in ("operator", "blue"):
        status, body, _ = await service.call(
            "POST",
            "/api/instances",
            json=CREATE,
            headers={**bearer(keys.secrets[key]), **headers},
            auth=False,
        )
        assert status == 202
        results.append(body)
    assert results[0]["id"] != results[1]["id"]
    assert (results[0]["team"], results[1]["team"]) == ("red", "blue")


async def _outbox_of(service: ServiceUnderTest, instance_id: str) -> str:
    async with service.resources.database.read() as conn:
        rows = await repo.list_outbox(conn, instance_id=instance_id)
    return rows[0].id


async def test_notifications_of_another_team_are_not_found(
    service: ServiceUnderTest, keys: Keys
) -> None:
    red = await created_by(service, keys.secrets["operator"])
    blue = await created_by(service, keys.secrets["blue"])
    red_note = await _outbox_of(service, red["id"])
    status, page = await call(service, keys.secrets["blue"], "GET", "/api/notifications")
    assert status == 200
    assert {item["instanceId"] for item in page["items"]} == {blue["id"]}
    for method, path in [
        ("GET", f"/api/notifications/{red_note}"),
        ("POST", f"/api/notifications/{red_note}/redeliver"),
    ]:
        status, answer = await call(service, keys.secrets["blue"], method, path)
        assert status == 404, answer
    status, _ = await call(service, keys.secrets["viewer"], "GET", f"/api/notifications/{red_note}")
    assert status == 200
    status, page = await call(service, keys.secrets["admin"], "GET", "/api/notifications")
    assert {item["instanceId"] for item in page["items"]} == {red["id"], blue["id"]}


async def test_events_a_key_causes_record_its_id_and_never_its_secret(
    service: ServiceUnderTest, keys: Keys
) -> None:
    red = await created_by(service, keys.secrets["operator"])
    status, _ = await call(
        service, keys.secrets["operator"], "DELETE", f"/api/instances/{red['id']}"
    )
    assert status == 202
    legacy = await created_by(service, API_KEY)
    async with service.resources.database.read() as conn:
        events = (await repo.list_events(conn, red["id"], after_seq=0, limit=50)).items
        legacy_events = (await repo.list_events(conn, legacy["id"], after_seq=0, limit=50)).items
    api_events = [e for e in events if e.source is EventSource.API]
    assert [e.kind for e in api_events] == ["created", "delete_requested", "deleted"]
    assert all(e.detail.get("keyId") == keys.ids["operator"] for e in api_events)
    assert legacy_events[0].detail["keyId"] == "API_KEYS#1"
    status, page = await call(
        service, keys.secrets["viewer"], "GET", f"/api/instances/{red['id']}/events"
    )
    assert status == 200
    text = json.dumps(page)
    assert keys.ids["operator"] in text
    assert all(secret not in text for secret in keys.secrets.values())


async def test_key_management_over_rest_never_shows_a_secret_again(
    service: ServiceUnderTest, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    admin = keys.secrets["admin"]
    status, created = await call(
        service, admin, "POST", "/api/keys", {"team": "green", "role": "operator", "name": "ci"}
    )
    assert status == 201, created
    secret = created["key"]
    assert secret.startswith(f"nlk_{created['id']}_")
    assert (created["team"], created["role"], created["name"]) == ("green", "operator", "ci")
    status, _ = await call(service, secret, "GET", "/api/instances")
    assert status == 200
    status, listing = await call(service, admin, "GET", "/api/keys?team=green")
    assert status == 200
    assert [k["id"] for k in listing["items"]] == [created["id"]]
    assert listing["items"][0]["lastUsedAt"] is not None
    status, revoked = await call(service, admin, "POST", "/api/keys/revoke", {"key": secret})
    assert status == 200 and revoked["revokedAt"] is not None
    status, answer = await call(service, secret, "GET", "/api/instances")
    assert status == 401 and answer["error"]["code"] == "UNAUTHORIZED"
    status, again = await call(service, admin, "DELETE", f"/api/keys/{created['id']}")
    assert status == 200 and again["revokedAt"] == revoked["revokedAt"]
    status, everything = await call(service, admin, "GET", "/api/keys")
    answers = json.dumps([everything, listing, revoked, again])
    assert all(s not in answers + caplog.text for s in [secret, *keys.secrets.values()])
    assert digest(secret) not in answers and "secretHash" not in answers


HOSTILE_KEY_BODIES = [
    {"team": "red", "role": "root"},
    {"team": "red"},
    {"role": "viewer"},
    {"team": "a" * 65, "role": "viewer"},
    {"team": "a\x00b", "role": "viewer"},
    {"team": "", "role": "viewer"},
    {"team": "red", "role": "viewer", "name": "x\x00y"},
    {"team": "red", "role": "viewer", "name": "n" * 101},
    {"team": "red", "role": "viewer", "name": "   "},
    {"team": "red", "role": "viewer", "extra": 1},
    {"team": ["red"], "role": "viewer"},
]


async def test_hostile_inputs_on_the_key_routes_are_refused(
    service: ServiceUnderTest, keys: Keys
) -> None:
    admin = keys.secrets["admin"]
    for body in HOSTILE_KEY_BODIES:
        status, answer = await call(service, admin, "POST", "/api/keys", body)
        assert status == 422, (body, answer)
        assert answer["error"]["details"]["fields"], answer
    for raw in ["not json", "[1]", ""]:
        status, answer, _ = await service.call(
            "POST",
            "/api/keys",
            data=raw,
            headers={**bearer(admin), "Content-Type": "application/json"},
            auth=False,
        )
        assert 400 <= status < 500, (raw, answer)
    for key_id in ["zz", "0" * 12, "%00", "x" * 5000, "nlk_0123456789ab_" + "A" * 43, "a%2Fb"]:
        status, answer = await call(service, admin, "DELETE", f"/api/keys/{key_id}")
        assert status == 404, (key_id, answer)
        assert "x" * 100 not in json.dumps(answer)
    for revoke in [
        {"key": "zz"},
        {"key": "x" * 5000},
        {"key": ""},
        {"key": "a\x00"},
        {},
        {"key": 5},
    ]:
        status, answer = await call(service, admin, "POST", "/api/keys/revoke", revoke)
        assert status == 422, (revoke, answer)
    status, answer = await call(service, admin, "POST", "/api/keys/revoke", {"key": "0" * 12})
    assert status == 404
    status, answer = await call(service, admin, "GET", "/api/keys?team=%00")
    assert status == 422
    status, answer = await call(service, admin, "GET", "/api/keys?bogus=1")
    assert status == 422
    for token in [
        "nlk_",
        "nlk_0123456789ab_short",
        f"nlk_{keys.ids['viewer']}_" + "A" * 43,
        "x" * 10_000,
    ]:
        status, answer = await call(service, token, "GET", "/api/instances")
        assert status == 401, token[:40]


async def test_last_use_is_written_at_most_once_a_minute(
    service: ServiceUnderTest, keys: Keys
) -> None:
    secret = keys.secrets["viewer"]
    await call(service, secret, "GET", "/api/instances")
    async with service.resources.database.read() as conn:
        first = await key_store.get_key(conn, keys.ids["viewer"])
    assert first is not None and first.last_used_at == service.clock.now()
    service.clock.advance(30)
    for _ in range(5):
        await call(service, secret, "GET", "/api/instances")
    async with service.resources.database.read() as conn:
        later = await key_store.get_key(conn, keys.ids["viewer"])
    assert later is not None and later.last_used_at == first.last_used_at


@asynccontextmanager
async def second_app(service: ServiceUnderTest, **settings: Any) -> AsyncIterator[str]:
    """Another app (its own key cache and state) on the same database."""
    resources = service.resources
    tuned = resources.settings.model_copy(update=settings)
    from dataclasses import replace

    app = create_app(tuned, replace(resources, settings=tuned), run_workers=False)
    async with running_server(app) as base_url:
        yield base_url


@pytest.mark.service_settings(api_key_cache_seconds=0)
async def test_a_revocation_is_seen_by_another_app_on_its_next_request(
    service: ServiceUnderTest, keys: Keys
) -> None:
    secret = keys.secrets["operator"]
    async with second_app(service, api_key_cache_seconds=0) as other:
        async with service.http.get(f"{other}/api/instances", headers=bearer(secret)) as response:
            assert response.status == 200
        status, _ = await call(
            service, keys.secrets["admin"], "DELETE", f"/api/keys/{keys.ids['operator']}"
        )
        assert status == 200
        async with service.http.get(f"{other}/api/instances", headers=bearer(secret)) as response:
            assert response.status == 401


@pytest.mark.service_settings(api_key_cache_seconds=60)
async def test_the_revoking_app_forgets_a_cached_key_at_once(
    service: ServiceUnderTest, keys: Keys
) -> None:
    secret = keys.secrets["operator"]
    assert (await call(service, secret, "GET", "/api/instances"))[0] == 200
    status, _ = await call(
        service, keys.secrets["admin"], "POST", "/api/keys/revoke", {"key": keys.ids["operator"]}
    )
    assert status == 200
    assert (await call(service, secret, "GET", "/api/instances"))[0] == 401


@pytest.mark.service_settings(event_stream_poll_interval=0.05)
async def test_the_event_stream_carries_only_the_keys_team(
    service: ServiceUnderTest, keys: Keys
) -> None:
    red = await created_by(service, keys.secrets["operator"])
    blue = await created_by(service, keys.secrets["blue"])

    async def seen(secret: str, query: str = "") -> set[str]:
        async with service.http.get(
            f"{service.base_url}/api/events{query}",
            headers={**bearer(secret), "Last-Event-ID": "0"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            assert response.status == 200, await response.text()
            found: set[str] = set()
            try:
                async with asyncio.timeout(1.0):
                    async for message in messages(response.content):
                        if message.event == "instance-event":
                            found.add(json.loads(message.data)["instanceId"])
            except TimeoutError:
                pass
            return found

    assert await seen(keys.secrets["blue-viewer"]) == {blue["id"]}
    assert await seen(keys.secrets["viewer"]) == {red["id"]}
    assert await seen(keys.secrets["admin"]) == {red["id"], blue["id"]}
    status, answer = await call(
        service, keys.secrets["blue-viewer"], "GET", f"/api/events?instance={red['id']}"
    )
    assert status == 422, answer  # another team's instance is unknown here too


async def test_reports_cover_the_keys_team_and_admins_choose(
    service: ServiceUnderTest, keys: Keys
) -> None:
    for _ in range(2):
        red = await created_by(service, keys.secrets["operator"])
    await created_by(service, keys.secrets["blue"])
    await call(service, keys.secrets["operator"], "DELETE", f"/api/instances/{red['id']}")
    service.clock.advance(1)  # windows end before now

    async def fleet(secret: str, query: str = "") -> int:
        status, body = await call(service, secret, "GET", f"/api/reports/fleet?groupBy={query}")
        assert status == 200, body
        return sum(row["instances"] for row in body["sections"]["fleet"]["rows"])

    assert await fleet(keys.secrets["viewer"]) == 2
    assert await fleet(keys.secrets["blue-viewer"]) == 1
    assert await fleet(keys.secrets["viewer"], "&team=blue") == 0
    assert await fleet(keys.secrets["admin"]) == 3
    assert await fleet(keys.secrets["admin"], "&team=blue") == 1
    status, body = await call(
        service, keys.secrets["viewer"], "GET", "/api/reports/reliability?since=1d"
    )
    assert status == 200 and body["parameters"]["team"] == "red"
    assert "webhooks" not in body["sections"]
    changes = {r["source"]: r["changes"] for r in body["sections"]["state_changes"]["rows"]}
    assert changes["api"] == 4  # red's: two created, one delete_requested, one deleted
    status, body = await call(
        service, keys.secrets["admin"], "GET", "/api/reports/reliability?since=1d"
    )
    assert "webhooks" in body["sections"] and "team" not in body["parameters"]
    for name in ("usage", "provisioning"):
        status, body = await call(
            service, keys.secrets["blue-viewer"], "GET", f"/api/reports/{name}?since=1d"
        )
        assert status == 200, body
    status, body = await call(service, keys.secrets["admin"], "GET", "/api/reports/fleet?team=a%00")
    assert status == 422 and body["error"]["details"]["fields"][0]["field"] == "team"


async def test_adopted_and_existing_instances_belong_to_the_default_team(
    service: ServiceUnderTest, keys: Keys
) -> None:
    from service.domain import InstanceSpec

    async with service.resources.database.transaction() as conn:
        made = await repo.insert_instance(conn, InstanceSpec(name="old"), now=service.clock.now())
    assert made.instance.team == "default"
    status, _ = await call(
        service, keys.secrets["viewer"], "GET", f"/api/instances/{made.instance.id}"
    )
    assert status == 404
    status, body = await call(service, API_KEY, "GET", f"/api/instances/{made.instance.id}")
    assert status == 200 and body["team"] == "default"
    assert made.instance.status is Status.PENDING


async def test_openapi_documents_the_key_routes_and_the_team(service: ServiceUnderTest) -> None:
    status, document, _ = await service.call("GET", "/openapi.json")
    assert status == 200
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert set(paths["/api/keys"]) == {"get", "post"}
    assert "delete" in paths["/api/keys/{key_id}"] and "post" in paths["/api/keys/revoke"]
    assert "403" in paths["/api/keys"]["post"]["responses"]
    assert "team" in schemas["Instance"]["properties"]
    assert "team" in schemas["CreateInstanceBody"]["properties"]
    assert {"team", "role", "name"} <= set(schemas["NewKeyRequest"]["properties"])
    listed = [p["name"] for p in paths["/api/instances"]["get"]["parameters"]]
    assert "team" in listed
