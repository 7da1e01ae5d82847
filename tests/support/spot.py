"""A spot instance Novita reclaims."""

from __future__ import annotations

from typing import Any

from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import Workers, status_of
from tests.support.policies import create_ready

SPOT = {"billingMode": "spot"}


async def reclaimed(service: ServiceUnderTest, workers: Workers, **fields: Any) -> dict[str, Any]:
    """A ready spot instance that Novita reclaims, once the reconciler has seen it."""
    instance = await create_ready(service, workers, **SPOT, **fields)
    service.simulator.reclaim(instance["novitaInstanceId"])
    await workers.settle()
    interrupted = await status_of(service, instance["id"])
    assert interrupted["status"] == "interrupted", interrupted
    return interrupted
