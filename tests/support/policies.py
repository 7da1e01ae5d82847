"""Shared pieces of the policy tests (not a test module itself): workers driven by hand on
the simulator's ManualClock, and readiness set directly (the readiness probe has its own
tests), so these tests pin only what the policies do."""

from __future__ import annotations

from typing import Any

from service.db import repository as repo
from service.domain import EventSource, OutboxMessage, Status
from service.workers.policy import PolicyConfig, PolicyWorker
from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import BODY, Workers, history, status_of


def policy_worker(service: ServiceUnderTest, owner: str = "policy-1") -> PolicyWorker:
    from service.lifecycle import Lifecycle

    r = service.resources
    return PolicyWorker(
        Lifecycle(r),
        database=r.database,
        clock=r.clock,
        owner=owner,
        config=PolicyConfig.from_settings(r.settings),
    )


async def make_ready(service: ServiceUnderTest, instance_id: str) -> None:
    async with service.resources.database.transaction() as conn:
        await repo.change_status(
            conn,
            instance_id,
            Status.READY,
            source=EventSource.RECONCILER,
            now=service.clock.now(),
            kind="ready",
        )


async def create_ready(
    service: ServiceUnderTest, workers: Workers, **fields: Any
) -> dict[str, Any]:
    """An instance through provisioning to `running`, then `ready`."""
    status, created, _ = await service.call("POST", "/api/instances", json={**BODY, **fields})
    assert status == 202, created
    await workers.provisioner.run_once()
    await workers.settle()
    assert (await status_of(service, created["id"]))["status"] == "running"
    await make_ready(service, created["id"])
    return await status_of(service, created["id"])


async def notifications(service: ServiceUnderTest, instance_id: str) -> list[OutboxMessage]:
    async with service.resources.database.read() as conn:
        return await repo.list_outbox(conn, instance_id=instance_id)


async def events_of_kind(
    service: ServiceUnderTest, instance_id: str, kind: str
) -> list[dict[str, Any]]:
    return [e for e in await history(service, instance_id) if e["kind"] == kind]
