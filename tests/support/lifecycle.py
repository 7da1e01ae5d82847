"""A service's instance driven through its lifecycle: the request body, the workers, reads."""

from __future__ import annotations

from typing import Any

from service.workers.applier import InboxApplier
from service.workers.provisioner import Provisioner, ProvisionerConfig
from service.workers.reconciler import Reconciler, ReconcilerConfig
from tests.plugins.service import ServiceUnderTest

BODY = {
    "name": "trainer",
    "productName": "RTX 4090 24GB",
    "templateId": "212",
    "gpuNum": 1,
    "region": "AS-SGP-02",
}


class Workers:
    def __init__(self, service: ServiceUnderTest) -> None:
        r = service.resources
        self.service = service
        self.provisioner = Provisioner(
            database=r.database,
            novita=r.novita,
            clock=r.clock,
            owner="p",
            config=ProvisionerConfig(),
        )
        self.reconciler = Reconciler(
            database=r.database,
            novita=r.novita,
            clock=r.clock,
            owner="r",
            config=ReconcilerConfig(),
        )
        self.applier = InboxApplier(r.database, r.clock)

    async def settle(self, seconds: float = 10, polls: int = 6) -> None:
        """Let the provider move and the reconciler see it, a few polling rounds."""
        for _ in range(polls):
            self.service.clock.advance(seconds)
            await self.service.simulator.tick()
            await self.reconciler.run_once()


async def status_of(service: ServiceUnderTest, instance_id: str) -> dict[str, Any]:
    status, body, _ = await service.call("GET", f"/api/instances/{instance_id}")
    assert status == 200
    return body  # type: ignore[no-any-return]


async def history(service: ServiceUnderTest, instance_id: str) -> list[dict[str, Any]]:
    _, events, _ = await service.call("GET", f"/api/instances/{instance_id}/events?limit=200")
    return events["items"]  # type: ignore[no-any-return]


async def create_running(service: ServiceUnderTest, workers: Workers) -> dict[str, Any]:
    status, created, _ = await service.call("POST", "/api/instances", json=BODY)
    assert status == 202
    await workers.provisioner.run_once()
    await workers.settle()
    instance = await status_of(service, created["id"])
    assert instance["status"] == "running", instance
    return instance
