"""Delivering every due notification."""

from __future__ import annotations

from service.workers.notifier import Notifier
from tests.plugins.service import ServiceUnderTest


async def notify_all(service: ServiceUnderTest) -> None:
    r = service.resources
    async with Notifier(
        database=r.database, settings=r.settings, clock=r.clock, owner="n"
    ) as notifier:
        while await notifier.run_once():
            pass
