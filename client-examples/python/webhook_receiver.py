"""Receive the service's notifications, verify their signatures, print each new event.

    WEBHOOK_SECRET=whsec_... RECEIVER_PORT=8000 python webhook_receiver.py

Then create instances with `webhookUrl` = http://<this host>:<port>/webhooks (or start
the service with WEBHOOK_URL set to it). A service sending to a receiver on loopback or a
private network needs ALLOW_PRIVATE_WEBHOOK_TARGETS=true.

Environment: WEBHOOK_SECRET (required; several comma-separated while rotating),
RECEIVER_HOST (default 127.0.0.1), RECEIVER_PORT (default 8000; 0 picks a free one),
RECEIVER_PATH (default /webhooks), WEBHOOK_TOLERANCE (seconds, default 300),
MAX_EVENTS (stop after that many events). SERVICE_URL and SERVICE_API_KEY are not
needed: nothing is fetched from the service.

Prints `listening on <url>` first, then one line per event; duplicates (the service
delivers at least once) are dropped, bad signatures answered 401 and logged to stderr.
Stops cleanly on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiohttp import web

from novita_lifecycle_client.webhooks import WebhookEvent, aiohttp_handler


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"webhook_receiver: set {name}")
    return value


def describe(event: WebhookEvent) -> str:
    return (
        f"{event.type} instance={event.instance_id} status={event.status} "
        f"sequence={event.sequence} id={event.id} scheme={event.scheme}"
    )


async def main() -> int:
    secrets = [s.strip() for s in env("WEBHOOK_SECRET").split(",") if s.strip()]
    host = env("RECEIVER_HOST", "127.0.0.1")
    port = int(env("RECEIVER_PORT", "8000"))
    path = env("RECEIVER_PATH", "/webhooks")
    tolerance = float(env("WEBHOOK_TOLERANCE", "300"))
    max_events = int(os.environ.get("MAX_EVENTS") or 0)
    stop = asyncio.Event()
    received = 0

    async def on_event(event: WebhookEvent) -> None:
        nonlocal received
        received += 1
        print(describe(event), flush=True)
        if max_events and received >= max_events:
            stop.set()

    try:
        handler = aiohttp_handler(secrets, on_event, tolerance=tolerance)
    except ValueError as exc:
        sys.exit(f"webhook_receiver: WEBHOOK_SECRET: {exc}")
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still works
            loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        print(f"listening on http://{host}:{bound_port}{path}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
    print(f"stopped after {received} event(s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
