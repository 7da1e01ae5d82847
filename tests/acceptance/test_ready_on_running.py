"""Readiness right away, on SQLite and PostgreSQL: once an instance is recorded `running`
(by a poll, or by a webhook saying so) it is probed at once, without waiting for the
readiness worker's next pass; a webhook's `running` carries no endpoints, so they are read
from Novita first. The readiness loop here idles for an hour: only the commit note of
`running` can wake it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from service.domain import Status
from service.novita import NovitaClient
from service.workers.applier import build_applier_loop
from service.workers.loop import WorkerGroup, WorkerLoop
from service.workers.readiness import ReadinessWorker, build_readiness_loop
from tests.plugins.service import ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed
from tests.support.provisioning import (
    add_instance,
    advance,
    load,
    make_provisioner,
    make_reconciler,
)

HOUR = 3600.0


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not await condition():  # type: ignore[misc]  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def novita(service: ServiceUnderTest) -> NovitaClient:
    return service.resources.novita


@pytest.fixture
async def readiness_loop(service: ServiceUnderTest) -> AsyncIterator[WorkerLoop]:
    """The process's readiness loop, wired as `serve` wires it, idling for an hour (the
    simulator's endpoints are on loopback: private probe targets allowed)."""
    loop = build_readiness_loop(replace(service.resources, allow_private_probe_targets=True))
    loop.idle_interval = HOUR
    group = WorkerGroup([loop])
    group.start()
    try:
        yield loop
    finally:
        await group.stop()


async def submitted(service: ServiceUnderTest, novita: NovitaClient) -> tuple[str, str]:
    """An instance created at Novita, recorded as submitted; Novita then runs it (the app
    answering at once) while we have not looked."""
    database, clock = service.resources.database, service.clock
    instance_id = await add_instance(database, clock)
    await make_provisioner(database, novita, clock).run_once()
    novita_id = (await load(database, instance_id)).novita_instance_id
    assert novita_id is not None
    service.simulator.set_app_startup_delay(novita_id, 0)
    await advance(service.simulator, clock, 30)
    assert service.simulator.state.get(novita_id).status == "running"
    return instance_id, novita_id


def status_is(service: ServiceUnderTest, instance_id: str, status: Status) -> Callable[[], object]:
    async def check() -> bool:
        return (await load(service.resources.database, instance_id)).status is status

    return check


async def test_a_poll_that_sees_running_has_the_instance_probed_at_once(
    service: ServiceUnderTest, novita: NovitaClient, readiness_loop: WorkerLoop
) -> None:
    instance_id, _ = await submitted(service, novita)
    await asyncio.sleep(0.1)  # the readiness loop has made its first pass and idles
    reconciler = make_reconciler(service.resources.database, novita, service.clock)
    await reconciler.run_once()

    await until(status_is(service, instance_id, Status.READY))
    worker = readiness_loop.worker
    assert isinstance(worker, ReadinessWorker)
    assert worker.ready_total == 1
    assert worker.endpoint_reads == 0, "the poll brought the endpoints"


async def test_a_webhook_saying_running_triggers_the_probe_at_once(
    service: ServiceUnderTest, novita: NovitaClient, readiness_loop: WorkerLoop
) -> None:
    instance_id, novita_id = await submitted(service, novita)
    applier = build_applier_loop(service.resources)
    applier.idle_interval = HOUR  # woken by the inbox when the webhook is stored
    group = WorkerGroup([applier])
    group.start()
    try:
        await asyncio.sleep(0.1)  # both loops idle now
        status, _ = await post(service, *signed(service, event(novita_id, "running")))
        assert status == 200

        await until(status_is(service, instance_id, Status.READY))
    finally:
        await group.stop()
    worker = readiness_loop.worker
    assert isinstance(worker, ReadinessWorker)
    # The webhook said nothing of the ports: they were read from Novita, then probed.
    assert worker.endpoint_reads == 1
    ready = await load(service.resources.database, instance_id)
    assert 7860 in [m["port"] for m in ready.port_mappings if m.get("endpoint")]


async def test_running_without_endpoints_is_never_ready_unprobed(
    service: ServiceUnderTest, novita: NovitaClient
) -> None:
    """Without a way to read the endpoints, a webhook's `running` waits: no `ready` on
    the strength of nothing probed."""
    instance_id, novita_id = await submitted(service, novita)
    applier = build_applier_loop(service.resources)
    worker = ReadinessWorker.from_resources(service.resources)
    worker.applier = None
    group = WorkerGroup([applier])
    group.start()
    try:
        await post(service, *signed(service, event(novita_id, "running")))
        await until(status_is(service, instance_id, Status.RUNNING))
    finally:
        await group.stop()
    await worker.run_once()
    assert (await load(service.resources.database, instance_id)).status is Status.RUNNING
    assert worker.ready_total == 0
