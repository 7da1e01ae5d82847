"""A scripted stand-in for the service on a loopback port: each request to a path gets
the next planned answer (status, JSON body, headers), so client behaviour is tested over
real HTTP without the whole service."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeApi:
    def __init__(self) -> None:
        self.base_url = ""
        self.plans: dict[str, deque[Answer]] = defaultdict(deque)
        self.requests: list[web.Request] = []
        self.bodies: list[bytes] = []

    def plan(self, path: str, *answers: Answer) -> None:
        self.plans[path].extend(answers)

    def statuses(self, instance_id: str, *statuses: str) -> None:
        """Answer GET /api/instances/<id> with these statuses, one per poll."""
        for status in statuses:
            self.plan(f"/api/instances/{instance_id}", Answer(200, instance(instance_id, status)))

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        self.bodies.append(await request.read())
        planned = self.plans[request.path]
        if not planned:
            return web.json_response({"error": {"code": "UNPLANNED"}}, status=599)
        answer = planned.popleft()
        text = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
        content_type = "text/html" if isinstance(answer.body, str) else "application/json"
        return web.Response(
            status=answer.status, text=text, content_type=content_type, headers=answer.headers
        )


def instance(instance_id: str, status: str, reason: str | None = None) -> dict[str, Any]:
    return {"id": instance_id, "name": "n", "status": status, "statusReason": reason}


@asynccontextmanager
async def running_fake_api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake._handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield fake
    finally:
        await runner.cleanup()
