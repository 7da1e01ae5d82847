"""`novita-lifecycle worker`: the workers of `serve`, without the HTTP app."""

from __future__ import annotations

import asyncio
import signal

import structlog

from service.resources import open_resources
from service.settings import Settings
from service.workers.loop import WorkerGroup
from service.workers.registry import build_worker_loops

log = structlog.get_logger(__name__)


async def run_workers(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every worker until `stop` is set (by default: until SIGINT or SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with open_resources(settings) as resources:
            group = WorkerGroup(build_worker_loops(resources))
            group.start()
            log.info("workers.running", count=len(group.loops))
            try:
                await stop.wait()
            finally:
                log.info("workers.stopping")
                await group.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
