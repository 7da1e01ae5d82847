"""A real webhook receiver on loopback that verifies every delivery like a client would.

Each request is checked with the `standardwebhooks` package (signature over id, timestamp
and raw body) and against the legacy `X-Webhook-Signature: sha256=<hex>` header (keyed
with the secret string as written, as the earlier service's receivers do). Its clock
is the test's `ManualClock` (sender and receiver share one notion of "now", as they do in
production), so tests can step hours of retry ladder without the timestamps going stale.

Per path, tests script the answers (`plan("/hook", 500, 500, 200)`), make a request hang
until released (`hang("/slow")`), or add headers (`Retry-After`, `Location`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.clock import ManualClock

_WAIT_LIMIT = 5.0  # seconds: a bound on waiting for the notifier, never a schedule step


class _ClockedWebhook(Webhook):
    """`standardwebhooks.Webhook` whose timestamp tolerance is measured on the test clock."""

    def __init__(self, secret: str, clock: ManualClock) -> None:
        super().__init__(secret)
        self._clock = clock

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        timestamp = datetime.fromtimestamp(float(timestamp_header), tz=self._clock.now().tzinfo)
        if abs(timestamp - self._clock.now()) > timedelta(minutes=5):
            raise WebhookVerificationError("Message timestamp outside the tolerance")
        return timestamp


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class _Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver:
    def __init__(self, secret: str, clock: ManualClock) -> None:
        self._webhook = _ClockedWebhook(secret, clock)
        # A receiver written for the earlier service keys the legacy HMAC with the secret
        # string as configured.
        self._legacy_key = secret.encode()
        self.received: list[Received] = []
        self.verification_errors: list[str] = []
        self._plans: dict[str, deque[_Answer]] = defaultdict(deque)
        self._hangs: dict[str, asyncio.Event] = {}
        self._hanging: dict[str, asyncio.Event] = {}
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []  # webhook-ids received while the same id was in flight
        self.delay = 0.0
        self.base_url = ""

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def plan(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next requests to `path` with these statuses (then 200)."""
        for status in statuses:
            self._plans[path].append(_Answer(status, dict(headers or {})))

    def hang(self, path: str) -> asyncio.Event:
        """Make requests to `path` wait until the returned event is set; see `hanging`."""
        self._hangs[path] = asyncio.Event()
        self._hanging[path] = asyncio.Event()
        return self._hangs[path]

    async def hanging(self, path: str) -> None:
        """Wait (at most a few seconds) until a request to `path` is being held."""
        async with asyncio.timeout(_WAIT_LIMIT):
            await self._hanging[path].wait()

    def release_all(self) -> None:
        for event in self._hangs.values():
            event.set()

    def to(self, path: str) -> list[Received]:
        return [item for item in self.received if item.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        lowered = {key.lower(): value for key, value in headers.items()}
        webhook_id = lowered.get("webhook-id", "")
        if webhook_id in self.in_flight:
            self.overlaps.append(webhook_id)
        self.in_flight.add(webhook_id)
        try:
            try:
                self._webhook.verify(body, headers)
                expected = "sha256=" + hmac.new(self._legacy_key, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(lowered.get("x-webhook-signature", ""), expected):
                    raise WebhookVerificationError("legacy X-Webhook-Signature mismatch")
                if lowered.get("x-webhook-timestamp") != lowered.get("webhook-timestamp"):
                    raise WebhookVerificationError("X-Webhook-Timestamp differs")
            except WebhookVerificationError as exc:
                self.verification_errors.append(f"{request.path}: {exc}")
                return web.Response(status=400, text=str(exc))
            self.received.append(Received(request.path, lowered, body))
            if request.path in self._hangs:
                self._hanging[request.path].set()
                async with asyncio.timeout(_WAIT_LIMIT * 2):
                    await self._hangs[request.path].wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            answers = self._plans[request.path]
            answer = answers.popleft() if answers else _Answer()
            return web.Response(status=answer.status, headers=answer.headers, text="ok")
        finally:
            self.in_flight.discard(webhook_id)


@asynccontextmanager
async def running_receiver(secret: str, clock: ManualClock) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, clock)
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", receiver._handle)
    app.router.add_route("GET", "/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, shutdown_timeout=2.0, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        receiver.base_url = f"http://127.0.0.1:{port}"
        yield receiver
    finally:
        receiver.release_all()
        await runner.cleanup()
