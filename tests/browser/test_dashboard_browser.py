"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium), against the service over loopback with the simulator as Novita.

One operator's session: refused with a wrong key, signed in, the fleet and an instance
created through the API, its timeline, a stop whose outcome arrives over the event
stream without a reload, a dead letter redelivered, signed out. Screenshots of each page
go to test-artifacts/dashboard/. Required when CI=true; skipped locally without chromium.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.plugins.service import API_KEY, WEBHOOK_SECRET, ServiceUnderTest
from tests.support.lifecycle import BODY, Workers, create_running
from tests.support.notifications import notify_all
from tests.support.webhook_receiver import running_receiver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
T = TypeVar("T")

# The browser test runs on SQLite only: the pages' SQL is covered on both databases by
# tests/acceptance/test_dashboard.py, and one browser session is the slow part.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _require_chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message + "; required when CI=true")
        pytest.skip(message)


class Page:
    """A Selenium driver whose blocking calls run in a thread, so the service (on this
    test's event loop) keeps answering while the browser waits for it."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def open(self, path: str) -> None:
        await self.run(self.driver.get, self.base_url + path)

    async def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return await self.run(self.driver.find_element, By.CSS_SELECTOR, css)

    async def text(self, css: str) -> str:
        element = await self.find(css)
        return str(await self.run(lambda: element.text))

    async def click(self, css: str, *, confirm: bool = False) -> None:
        """Click, then wait for the page the click leads to (every click here submits a
        form or follows a link): Selenium may return before the browser has navigated."""
        element = await self.find(css)
        await self.script("window.__beforeClick = true")
        if confirm:
            # The confirmation dialog blocks the click until answered: answer it meanwhile.
            click = asyncio.create_task(self.run(element.click))
            await self.accept_dialog()
            await click
        else:
            await self.run(element.click)
        await self.wait_for_new_document()

    async def wait_for_new_document(self) -> None:
        from selenium.common.exceptions import WebDriverException

        loaded = "return window.__beforeClick === undefined && document.readyState === 'complete'"
        async with asyncio.timeout(15):
            while True:
                try:
                    if await self.script(loaded):
                        return
                except WebDriverException:  # asked while the old page was being unloaded
                    pass
                await asyncio.sleep(0.05)

    async def accept_dialog(self) -> None:
        from selenium.common.exceptions import NoAlertPresentException

        async with asyncio.timeout(10):
            while True:
                try:
                    await self.run(lambda: self.driver.switch_to.alert.accept())
                    return
                except NoAlertPresentException:
                    await asyncio.sleep(0.05)

    async def type(self, css: str, value: str) -> None:
        element = await self.find(css)
        await self.run(element.clear)
        await self.run(element.send_keys, value)

    async def path(self) -> str:
        url = str(await self.run(lambda: self.driver.current_url))
        return url.removeprefix(self.base_url)

    async def script(self, source: str) -> Any:
        return await self.run(self.driver.execute_script, source)

    async def wait_for_text(self, css: str, wanted: str) -> None:
        last = ""
        try:
            async with asyncio.timeout(15):
                while True:
                    last = await self.text(css)
                    if last == wanted:
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"{css} shows {last!r}, not {wanted!r}") from None

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.run(self.driver.save_screenshot, str(ARTIFACTS / f"{name}.png"))

    async def console_errors(self) -> list[str]:
        logs = await self.run(self.driver.get_log, "browser")
        return [entry["message"] for entry in logs if entry["level"] == "SEVERE"]


@pytest.fixture
async def page(service: ServiceUnderTest) -> AsyncIterator[Page]:
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nl-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = await asyncio.to_thread(
        webdriver.Chrome, service=Service(executable_path=CHROMEDRIVER), options=options
    )
    try:
        driver.set_page_load_timeout(30)
        yield Page(driver, service.base_url)
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.service_settings(
    allow_private_webhook_targets=True,
    webhook_retry_schedule="0",
    event_stream_poll_interval=0.1,
)
async def test_an_operator_session_in_a_real_browser(page: Page, service: ServiceUnderTest) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    async with running_receiver(WEBHOOK_SECRET, service.clock) as receiver:
        receiver.plan("/down", 500)
        status, doomed, _ = await service.call(
            "POST",
            "/api/instances",
            json={**BODY, "name": "doomed", "webhookUrl": receiver.url("/down")},
        )
        assert status == 202
        await notify_all(service)

    # No session: every page sends the browser to the sign-in form.
    await page.open(f"/dashboard/instances/{instance['id']}")
    assert (await page.path()).startswith("/dashboard/sign-in?next=")

    # A wrong key is refused.
    await page.type("#api_key", "not-the-key")
    await page.click("#sign-in")
    assert "not valid" in await page.text("#sign-in-error")
    await page.screenshot("01-sign-in-refused")

    # The right key: back to the page asked for, the instance created through the API.
    await page.type("#api_key", API_KEY)
    await page.click("#sign-in")
    assert await page.path() == f"/dashboard/instances/{instance['id']}"
    await page.open("/dashboard/")
    assert await page.text("#running-gpus") == "1"
    assert await page.text("#breaker") == "closed"
    await page.screenshot("02-fleet")

    await page.open("/dashboard/instances")
    await page.click(f'a[href="/dashboard/instances/{instance["id"]}"]')
    await page.screenshot("03-instances-then-instance")
    badge = f'h1 [data-status-for="{instance["id"]}"]'
    assert await page.text(badge) == "running"
    timeline = await page.text("#timeline")
    assert "pending → provisioning" in timeline and "provisioning → running" in timeline
    await page.wait_for_text("#live", "live")

    # Stop: asked through the page (confirmed), then the provider's answer arrives over
    # the event stream and the badge changes without a reload.
    await page.click("#action-stop", confirm=True)
    assert "stop requested" in await page.text(".notice")
    assert await page.text(badge) == "stopping"
    await page.wait_for_text("#live", "live")
    await page.script("window.__sameDocument = 'yes'")
    await workers.settle()
    _, current, _ = await service.call("GET", f"/api/instances/{instance['id']}")
    assert current["status"] == "stopped"
    await page.wait_for_text(badge, "stopped")
    assert await page.script("return window.__sameDocument") == "yes", "the page reloaded"
    assert "stopping → stopped" in await page.text("#timeline")
    await page.screenshot("04-instance-stopped-live")

    # A dead letter, redelivered.
    await page.open("/dashboard/notifications?status=failed")
    row = f'tr[data-notification] a[href="/dashboard/instances/{doomed["id"]}"]'
    await page.find(row)
    await page.screenshot("05-dead-letters")
    await page.click("button.redeliver", confirm=True)
    assert "queued again" in await page.text("#redelivered")
    _, pending, _ = await service.call(
        "GET", f"/api/notifications?status=pending&instance={doomed['id']}"
    )
    assert [n["type"] for n in pending["items"]] == ["instance.created"]
    await page.screenshot("06-redelivered")

    await page.open("/dashboard/reports")
    assert "GPU-hours per day" in await page.text("#usage")
    await page.screenshot("07-reports")

    assert not [e for e in await page.console_errors() if "Content Security Policy" in e]

    await page.click("#sign-out")
    assert await page.path() == "/dashboard/sign-in"
    await page.open("/dashboard/")
    assert (await page.path()).startswith("/dashboard/sign-in")
