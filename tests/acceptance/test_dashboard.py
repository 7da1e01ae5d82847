"""/dashboard over real loopback HTTP, on SQLite and PostgreSQL: sign-in with a key into a
signed cookie that never holds it, CSRF on every POST, the API's rules for actions and
filters, escaping, security headers, and CSV downloads. (A real browser drives the same
pages in tests/browser.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service.dashboard.session import COOKIE, SessionCookie
from service.settings import load_settings
from tests.plugins.service import API_KEY, WEBHOOK_SECRET, ServiceUnderTest
from tests.support.lifecycle import BODY, Workers, create_running
from tests.support.notifications import notify_all
from tests.support.webhook_receiver import WebhookReceiver, running_receiver

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """An aiohttp session with its own cookie jar, following no redirects by itself."""

    def __init__(self, service: ServiceUnderTest) -> None:
        self.service = service
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str, Any]:
        async with self.http.get(self.service.base_url + path, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers

    async def post(self, path: str, form: dict[str, str]) -> tuple[int, str, Any]:
        async with self.http.post(
            self.service.base_url + path, data=form, allow_redirects=False
        ) as response:
            return response.status, await response.text(), response.headers

    async def csrf(self, path: str) -> str:
        status, text, _ = await self.get(path)
        assert status == 200, text
        match = CSRF.search(text)
        assert match, "the page has no CSRF token"
        return match.group(1)

    async def sign_in(self, key: str = API_KEY) -> tuple[int, str, Any]:
        token = await self.csrf("/dashboard/sign-in")
        return await self.post(
            "/dashboard/sign-in", {"csrf": token, "api_key": key, "next": "/dashboard/"}
        )


@pytest.fixture
async def browser(service: ServiceUnderTest) -> AsyncIterator[Browser]:
    browser = Browser(service)
    try:
        yield browser
    finally:
        await browser.http.close()


async def signed_in(browser: Browser) -> Browser:
    status, _, headers = await browser.sign_in()
    assert status == 303 and headers["Location"] == "/dashboard/"
    return browser


async def test_pages_without_a_session_redirect_to_sign_in(browser: Browser) -> None:
    for path in ("/dashboard/", "/dashboard/instances?status=ready", "/dashboard/reports"):
        status, _, headers = await browser.get(path)
        assert status == 303
        assert headers["Location"].startswith("/dashboard/sign-in?next=%2Fdashboard%2F")
    status, _, headers = await browser.post("/dashboard/instances/x/stop", {"csrf": "x"})
    assert status == 303 and headers["Location"] == "/dashboard/sign-in"
    status, _, headers = await browser.get("/dashboard/events")
    assert status == 303


async def test_a_wrong_key_is_refused_and_the_right_one_signs_in(
    browser: Browser, service: ServiceUnderTest
) -> None:
    status, text, _ = await browser.sign_in("not-the-key")
    assert status == 401 and "not valid" in text
    status, _, headers = await browser.get("/dashboard/")
    assert status == 303

    status, _, headers = await browser.sign_in()
    assert status == 303
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for flag in ("HttpOnly", "Path=/dashboard", "SameSite=strict", "Max-Age=28800"):
        assert flag.lower() in cookie.lower(), flag
    value = cookie.split(";")[0].split("=", 1)[1]
    assert API_KEY not in value and API_KEY not in _b64_decoded(value)
    status, text, headers = await browser.get("/dashboard/")
    assert status == 200 and "Fleet" in text
    assert headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert "<script>" not in text and "style=" not in text, "no inline script or style"


def _b64_decoded(value: str) -> str:
    import base64

    head = value.split(".")[0]
    try:
        return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode("latin-1")
    except ValueError:
        return ""


async def test_sign_in_needs_the_forms_csrf_token_and_sign_out_ends_the_session(
    browser: Browser,
) -> None:
    await browser.csrf("/dashboard/sign-in")
    status, _, _ = await browser.post("/dashboard/sign-in", {"csrf": "forged", "api_key": API_KEY})
    assert status == 403
    await signed_in(browser)
    status, _, _ = await browser.post("/dashboard/sign-out", {"csrf": "forged"})
    assert status == 403
    token = await browser.csrf("/dashboard/")
    status, _, headers = await browser.post("/dashboard/sign-out", {"csrf": token})
    assert status == 303 and headers["Location"] == "/dashboard/sign-in"
    status, _, _ = await browser.get("/dashboard/")
    assert status == 303


async def test_next_never_leaves_the_dashboard(browser: Browser) -> None:
    token = await browser.csrf("/dashboard/sign-in")
    for target in ("https://evil.example/", "//evil.example/x", "/api/instances", "/\\evil"):
        status, _, headers = await browser.post(
            "/dashboard/sign-in", {"csrf": token, "api_key": API_KEY, "next": target}
        )
        assert status == 303 and headers["Location"] == "/dashboard/", target
        token = await browser.csrf("/dashboard/")


def test_a_session_ends_when_its_key_is_removed() -> None:
    secret = "dashboard-secret-for-this-test-0123"
    before = load_settings(
        api_keys="key-one-0123456789,key-two-0123456789", dashboard_secret=secret
    )
    after = load_settings(api_keys="key-two-0123456789", dashboard_secret=secret)
    session = SessionCookie(before).new("key-one-0123456789")
    assert session.signed_in
    from starlette.requests import Request
    from starlette.responses import Response

    scope: dict[str, Any] = {
        "type": "http",
        "headers": [],
        "scheme": "http",
        "server": ("h", 80),
        "path": "/",
        "query_string": b"",
    }
    response = Response()
    SessionCookie(before).write(response, Request(scope), session)
    value = response.headers["set-cookie"].split(";")[0]
    request = Request({**scope, "headers": [(b"cookie", value.encode())]})
    assert SessionCookie(before).read(request) is not None
    assert SessionCookie(after).read(request) is None, "a removed key's session is gone"


async def test_everything_shown_is_escaped(browser: Browser, service: ServiceUnderTest) -> None:
    evil = "<script>alert(1)</script>"
    status, created, _ = await service.call(
        "POST", "/api/instances", json={**BODY, "name": "evil", "labels": {"k": evil}}
    )
    assert status == 202, created
    await signed_in(browser)
    for path in ("/dashboard/instances", f"/dashboard/instances/{created['id']}"):
        status, text, _ = await browser.get(path)
        assert status == 200
        assert evil not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


async def test_instances_use_the_apis_filters_and_pagination(
    browser: Browser, service: ServiceUnderTest
) -> None:
    for n in range(3):
        await service.call(
            "POST", "/api/instances", json={**BODY, "name": f"job-{n}", "labels": {"team": "ml"}}
        )
        service.clock.advance(1)
    await service.call("POST", "/api/instances", json={**BODY, "name": "other"})
    await signed_in(browser)
    status, text, _ = await browser.get("/dashboard/instances?label=team:ml&limit=2")
    assert status == 200
    shown = re.findall(r">(job-\d|other)</a>", text)
    assert shown == ["job-2", "job-1"], "newest first, two a page, only the label"
    next_link = re.search(r'href="(\?[^"]*cursor=[^"]+)" id="next-page"', text)
    assert next_link, "a next page link"
    status, text, _ = await browser.get(
        "/dashboard/instances" + next_link.group(1).replace("&amp;", "&")
    )
    assert re.findall(r">(job-\d|other)</a>", text) == ["job-0"]
    status, text, _ = await browser.get("/dashboard/instances?status=sleeping")
    assert status == 422 and "status: must be one of" in text


async def test_actions_follow_the_lifecycle_rules_and_need_csrf(
    browser: Browser, service: ServiceUnderTest
) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    await signed_in(browser)
    page = f"/dashboard/instances/{instance['id']}"
    status, text, _ = await browser.get(page)
    assert status == 200 and "running" in text and 'id="timeline"' in text
    status, _, _ = await browser.post(f"{page}/stop", {"csrf": "forged"})
    assert status == 403
    token = await browser.csrf(page)
    status, _, headers = await browser.post(f"{page}/stop", {"csrf": token})
    assert status == 303 and headers["Location"] == f"{page}?done=stop"
    _, current, _ = await service.call("GET", f"/api/instances/{instance['id']}")
    assert current["status"] == "stopping"
    # The same rule as the API: stopping again is a conflict, shown on the page.
    status, text, _ = await browser.post(f"{page}/stop", {"csrf": token})
    assert status == 409 and "stop refused" in text
    status, text, _ = await browser.get(f"{page}/delete")
    assert status == 200 and "Yes, delete it" in text
    status, _, _ = await browser.post(f"{page}/explode", {"csrf": token})
    assert status == 404
    status, text, _ = await browser.get("/dashboard/instances/inst_missing")
    assert status == 404


@pytest.mark.service_settings(allow_private_webhook_targets=True, webhook_retry_schedule="0")
async def test_dead_letters_are_listed_and_redelivered(
    browser: Browser, service: ServiceUnderTest
) -> None:
    async with running_receiver(WEBHOOK_SECRET, service.clock) as receiver:
        await _dead_letter(service, receiver)
        await signed_in(browser)
        status, text, _ = await browser.get("/dashboard/notifications?status=failed")
        assert status == 200 and "instance.created" in text
        notification = re.search(r'data-notification="([^"]+)"', text)
        assert notification
        status, detail, _ = await browser.get(f"/dashboard/notifications/{notification.group(1)}")
        assert status == 200 and "HTTP 500" in detail and 'id="attempts"' in detail
        token = CSRF.search(text).group(1)  # type: ignore[union-attr]
        status, _, headers = await browser.post(
            f"/dashboard/notifications/{notification.group(1)}/redeliver", {"csrf": token}
        )
        assert status == 303 and "redelivered=" in headers["Location"]
        _, pending, _ = await service.call("GET", "/api/notifications?status=pending")
        assert [n["id"] for n in pending["items"]] == [notification.group(1)]


async def _dead_letter(service: ServiceUnderTest, receiver: WebhookReceiver) -> None:
    receiver.plan("/down", 500)
    status, _, _ = await service.call(
        "POST", "/api/instances", json={**BODY, "webhookUrl": receiver.url("/down")}
    )
    assert status == 202
    await notify_all(service)


async def test_fleet_and_reports_render_with_csv_downloads(
    browser: Browser, service: ServiceUnderTest
) -> None:
    workers = Workers(service)
    await create_running(service, workers)
    service.clock.advance(3600)
    await signed_in(browser)
    status, text, _ = await browser.get("/dashboard/")
    assert status == 200
    assert re.search(r'id="running-gpus">1<', text)
    assert re.search(r'id="breaker">closed<', text)
    status, text, _ = await browser.get("/dashboard/reports?since=7d")
    assert status == 200 and text.count("<svg") == 4
    assert "GPU-hours per day" in text
    for name in ("usage", "provisioning", "failure_reasons"):
        async with browser.http.get(
            f"{service.base_url}/dashboard/reports/{name}.csv?since=7d", allow_redirects=False
        ) as response:
            assert response.status == 200, name
            assert response.content_type == "text/csv"
            assert "attachment" in response.headers["Content-Disposition"]
            body = await response.text()
            assert body.splitlines()[0], name
    async with browser.http.get(
        f"{service.base_url}/dashboard/reports/usage.csv?since=7d", allow_redirects=False
    ) as response:
        lines = (await response.text()).splitlines()
    assert lines[0] == "day,gpu_hours,cost_usd" and len(lines) >= 2


async def test_static_assets_are_served_from_the_package(browser: Browser) -> None:
    for asset, kind in (("dashboard.css", "text/css"), ("dashboard.js", "javascript")):
        async with browser.http.get(
            f"{browser.service.base_url}/dashboard/static/{asset}"
        ) as response:
            assert response.status == 200
            assert kind in response.headers["Content-Type"]
