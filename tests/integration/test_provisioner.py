"""The provisioner against the simulator, on SQLite and PostgreSQL: region fallback, failure
reasons, and never two Novita instances for one request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from service.clock import ManualClock
from service.db import claims
from service.db.engine import Database
from service.domain import Status
from service.novita import CircuitBreaker, NovitaClient
from service.provisioning.catalogue import CatalogueCache
from service.provisioning.naming import instance_id_from_provider_name
from service.provisioning.selection import SelectionRequest, select_candidates
from service.provisioning.templates import merge_template
from service.resources import open_resources
from service.settings import load_settings
from service.simulator import Simulator
from service.workers.provisioner import Provisioner, build_create_request
from tests.support.provisioning import (
    add_instance,
    advance,
    api_moves,
    creates,
    events,
    load,
    make_client,
    make_provisioner,
    make_reconciler,
)


@pytest.fixture
async def novita(
    simulator: Simulator, sim_api_key: str, sim_clock: ManualClock
) -> AsyncIterator[NovitaClient]:
    async with make_client(simulator, sim_api_key, sim_clock) as client:
        yield client


async def die_after_create(
    database: Database, novita: NovitaClient, clock: ManualClock, instance_id: str
) -> None:
    """An old process claims, writes the intent, creates... and dies before recording it."""
    async with database.transaction() as conn:
        [row] = await claims.claim_pending(conn, owner="old", now=clock.now(), ttl=60, limit=10)
    async with database.transaction() as conn:
        assert await claims.record_intent(conn, row.id, owner="old", now=clock.now(), ttl=60)
    old = make_provisioner(database, novita, clock, owner="old")
    products = await old.catalogue.products("onDemand")
    clusters = await old.catalogue.clusters()
    template = await old.templates.get("212")
    launch = merge_template(
        template,
        image_url=None,
        image_auth_id=None,
        ports=row.ports,
        envs=row.envs,
        rootfs_size=None,
    )
    candidate = select_candidates(SelectionRequest.for_instance(row, None), products, clusters)[0]
    await novita.create_instance(build_create_request(row, launch, candidate))


async def test_create_reaches_provisioning_then_running_with_region_and_price(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
    provisioner: Provisioner,
) -> None:
    instance_id = await add_instance(database, sim_clock)

    assert await provisioner.run_once() == 1

    instance = await load(database, instance_id)
    assert instance.status is Status.PROVISIONING
    assert instance.region == "AS-SGP-02"  # first in the default priority
    assert instance.product_id == "4090.16c62g"
    assert instance.price_per_hour == Decimal("0.35")
    assert instance.submitted_at == sim_clock.now()
    assert instance.image_url == "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
    assert instance.claim_owner is None, "the claim is handed back for the reconciler"
    assert instance.novita_instance_id is not None
    created = simulator.instance(instance.novita_instance_id)
    assert created is not None
    assert instance_id_from_provider_name(created.name) == instance_id
    assert created.cluster_id == "as-sgp-2"
    envs = {env["key"]: env["value"] for env in created.envs}
    assert envs["JUPYTER_TOKEN"] == "s3cr3t-token", "the request's env wins over the template's"
    assert envs["PYTHONUNBUFFERED"] == "1", "the template's other envs are kept"
    ports = {(p.port, p.type) for p in created.ports}
    assert ports == {(8888, "http"), (22, "tcp"), (7860, "http")}
    history = await events(database, instance_id)
    assert [(e.to_status, e.source.value) for e in history] == [
        (Status.PENDING, "api"),
        (Status.PROVISIONING, "provisioner"),
    ]
    assert history[1].detail["region"] == "AS-SGP-02"
    assert "s3cr3t-token" not in str(history), "env values never go into events"

    reconciler = make_reconciler(database, novita, sim_clock)
    await advance(simulator, sim_clock, 10)
    assert await reconciler.run_once() == 1
    running = await load(database, instance_id)
    assert running.status is Status.RUNNING
    assert running.provider_status == "running"
    assert {m["port"] for m in running.port_mappings} == {8888, 22, 7860}
    assert await provisioner.run_once() == 0, "nothing is provisioned twice"
    assert creates(simulator) == 1


async def test_preferred_region_without_capacity_falls_back_and_is_blocked(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    # The product list still says deployable (another US cluster has room); this one has none.
    simulator.set_capacity("us-ca-06", 0)
    first = await add_instance(database, sim_clock, region="US-CA-06")

    await provisioner.run_once()

    instance = await load(database, first)
    assert instance.status is Status.PROVISIONING
    assert instance.region == "AS-SGP-02"
    attempts = (await events(database, first))[-1].detail["capacityAttempts"]
    assert [(a["region"], a["productId"], a["reason"]) for a in attempts] == [
        ("US-CA-06", "4090.16c62g.us", "INSUFFICIENT_RESOURCE")
    ]
    assert creates(simulator) == 2

    simulator.set_capacity("us-ca-06", 5)  # capacity is back, but the block is still on
    second = await add_instance(database, sim_clock, region="US-CA-06")
    await provisioner.run_once()
    assert (await load(database, second)).region == "AS-SGP-02"
    assert creates(simulator) == 3, "the blocked region x product was not tried"

    sim_clock.advance(301)  # the block expires
    third = await add_instance(database, sim_clock, region="US-CA-06")
    await provisioner.run_once()
    assert (await load(database, third)).region == "US-CA-06"


async def test_every_region_exhausted_fails_with_each_regions_error(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    await provisioner.catalogue.products("onDemand")  # availability read before it ran out
    for cluster in ("as-sgp-2", "cn-hongkong-1", "eu-de-01"):
        simulator.set_capacity(cluster, 0)
    instance_id = await add_instance(
        database, sim_clock, product_name="RTX 3090 24GB", template_id=None, image_url="me/app:1"
    )

    await provisioner.run_once()

    instance = await load(database, instance_id)
    assert instance.status is Status.FAILED
    assert instance.status_reason == "no_capacity"
    detail = (await events(database, instance_id))[-1].detail
    assert [(a["region"], a["productId"], a["reason"]) for a in detail["attempts"]] == [
        ("AS-SGP-02", "3090.16c92g", "INSUFFICIENT_RESOURCE"),
        ("CN-HK-01", "3090.16c92g", "INSUFFICIENT_RESOURCE"),
        ("EU-DE-01", "3090.8c46g.eu", "INSUFFICIENT_RESOURCE"),
    ]
    assert all(a["message"] for a in detail["attempts"])
    assert simulator.instances() == []


async def test_nothing_deployable_fails_as_no_capacity_without_a_create(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    for cluster in ("as-sgp-2", "cn-hongkong-1", "eu-de-01"):
        simulator.set_capacity(cluster, 0)
    instance_id = await add_instance(database, sim_clock, product_name="RTX 3090 24GB")
    await provisioner.run_once()
    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "no_capacity")
    assert creates(simulator) == 0


async def test_unknown_product_fails_as_no_matching_product(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    instance_id = await add_instance(database, sim_clock, product_name="RTX 9090 96GB")
    await provisioner.run_once()
    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "no_matching_product")
    assert creates(simulator) == 0


async def test_missing_template_fails_as_template_not_found(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    instance_id = await add_instance(database, sim_clock, template_id="99999")
    await provisioner.run_once()
    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "template_not_found")
    assert creates(simulator) == 0


async def test_validation_rejection_fails_at_once_without_other_regions(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    # Port 2222 is reserved at Novita: no other product or region would take it either.
    instance_id = await add_instance(
        database, sim_clock, ports=({"port": 2222, "type": "tcp"},)
    )

    with capture_logs() as logs:
        await provisioner.run_once()

    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "create_rejected")
    detail = (await events(database, instance_id))[-1].detail
    assert detail["reason"] == "VALIDATOR_PARAM"
    assert detail["region"] == "AS-SGP-02"
    assert creates(simulator) == 1, "no other region is tried after a rejection"
    assert "s3cr3t-token" not in str(logs)


async def test_cuda_incompatibility_tries_the_next_product_and_keeps_the_reason(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    # Template 212 needs CUDA 12.4. The cheaper RTX 3090 (Singapore, Hong Kong) has 12.2:
    # refused once, its Hong Kong region is not tried, and the German one (12.4) is made.
    instance_id = await add_instance(database, sim_clock, product_name="RTX 3090 24GB")

    await provisioner.run_once()

    instance = await load(database, instance_id)
    assert instance.status is Status.PROVISIONING
    assert (instance.product_id, instance.region) == ("3090.8c46g.eu", "EU-DE-01")
    detail = (await events(database, instance_id))[-1].detail
    assert [(a["productId"], a["reason"]) for a in detail["capacityAttempts"]] == [
        ("3090.16c92g", "CUDA_VERSION_INCOMPATIBLE")
    ]
    assert creates(simulator) == 2


async def test_cuda_incompatible_everywhere_fails_with_that_reason(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    # The only RTX A6000 has CUDA 12.2; template 212 needs 12.4.
    instance_id = await add_instance(database, sim_clock, product_name="RTX A6000 48GB")

    await provisioner.run_once()

    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (
        Status.FAILED,
        "cuda_version_incompatible",
    )
    attempts = (await events(database, instance_id))[-1].detail["attempts"]
    assert [(a["productId"], a["reason"]) for a in attempts] == [
        ("26", "CUDA_VERSION_INCOMPATIBLE")
    ]
    assert creates(simulator) == 1


async def test_authentication_rejection_fails_at_once(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
) -> None:
    """The key is revoked between the catalogue reads and the create."""
    async with make_client(simulator, "revoked-key", sim_clock) as revoked:
        provisioner = Provisioner(
            database=database,
            novita=revoked,
            clock=sim_clock,
            owner="p1",
            catalogue=CatalogueCache(novita, sim_clock, ttl=30),
        )
        instance_id = await add_instance(database, sim_clock, template_id=None, image_url="a:1")
        await provisioner.run_once()
    instance = await load(database, instance_id)
    assert (instance.status, instance.status_reason) == (Status.FAILED, "create_rejected")
    assert (await events(database, instance_id))[-1].detail["code"] == "NOVITA_AUTHENTICATION"
    assert simulator.instances() == []


async def test_500_after_create_adopts_the_one_instance_novita_made(
    database: Database, simulator: Simulator, sim_clock: ManualClock, provisioner: Provisioner
) -> None:
    simulator.faults.create_500_after_create = 1
    instance_id = await add_instance(database, sim_clock)

    with capture_logs() as logs:
        await provisioner.run_once()

    assert len(simulator.instances()) == 1
    made = simulator.instances()[0]
    instance = await load(database, instance_id)
    assert instance.status is Status.PROVISIONING
    assert instance.novita_instance_id == made.id
    assert instance.region == "AS-SGP-02"
    assert instance.price_per_hour == Decimal("0.35")
    adopted = (await events(database, instance_id))[-1]
    assert adopted.kind == "adopted" and adopted.detail["adopted"] is True
    assert {"provision.create_ambiguous", "provision.adopted"} <= {e["event"] for e in logs}

    assert await provisioner.run_once() == 0
    assert creates(simulator) == 1


async def test_restart_between_create_and_commit_adopts_instead_of_creating_again(
    database: Database,
    simulator: Simulator,
    sim_clock: ManualClock,
    novita: NovitaClient,
) -> None:
    instance_id = await add_instance(database, sim_clock)
    await die_after_create(database, novita, sim_clock, instance_id)

    fresh = make_provisioner(database, novita, sim_clock, owner="new")
    assert await fresh.run_once() == 0, "the dead process's claim holds until it expires"
    sim_clock.advance(61)
    assert await fresh.run_once() == 1

    instance = await load(database, instance_id)
    assert instance.status is Status.PROVISIONING
    assert (await events(database, instance_id))[-1].kind == "adopted"
    assert len(simulator.instances()) == 1
    assert creates(simulator) == 1


async def test_intent_without_a_landed_create_waits_then_creates_once(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    """Died after the intent, before the request left: after the settle window, create."""
    instance_id = await add_instance(database, sim_clock)
    async with database.transaction() as conn:
        await claims.claim_pending(conn, owner="old", now=sim_clock.now(), ttl=5, limit=10)
        await claims.record_intent(conn, instance_id, owner="old", now=sim_clock.now(), ttl=5)
    fresh = make_provisioner(database, novita, sim_clock, owner="new", create_settle=60)

    sim_clock.advance(10)  # the claim expired; the create might still be landing
    assert await fresh.run_once() == 1
    assert (await load(database, instance_id)).status is Status.PENDING
    assert creates(simulator) == 0

    sim_clock.advance(50)
    await fresh.run_once()
    assert (await load(database, instance_id)).status is Status.PROVISIONING
    assert creates(simulator) == 1


async def test_two_provisioners_share_the_work_and_provision_each_instance_once(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    ids = [await add_instance(database, sim_clock, name=f"job-{n}") for n in range(6)]
    first = make_provisioner(database, novita, sim_clock, owner="p1", batch_size=3)
    second = make_provisioner(database, novita, sim_clock, owner="p2", batch_size=3)

    done = await asyncio.gather(first.run_once(), second.run_once())

    assert done == [3, 3]
    for instance_id in ids:
        assert (await load(database, instance_id)).status is Status.PROVISIONING
        submitted = [e for e in await events(database, instance_id) if e.kind == "submitted"]
        assert len(submitted) == 1
    assert len(simulator.instances()) == 6
    owners = {instance_id_from_provider_name(i.name) for i in simulator.instances()}
    assert owners == set(ids)


async def test_novita_unavailable_leaves_pending_and_backs_off(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    provisioner = make_provisioner(database, novita, sim_clock, backoff_base=5)
    instance_id = await add_instance(database, sim_clock)
    simulator.faults.error_rate = 1.0

    await provisioner.run_once()

    instance = await load(database, instance_id)
    assert instance.status is Status.PENDING
    assert instance.claim_owner is None
    assert instance.next_check_at is not None and instance.next_check_at > sim_clock.now()
    assert await provisioner.run_once() == 0, "not due again before its backoff"

    simulator.faults.error_rate = 0.0
    sim_clock.advance((instance.next_check_at - sim_clock.now()).total_seconds())
    await provisioner.run_once()
    assert (await load(database, instance_id)).status is Status.PROVISIONING


async def test_open_breaker_pauses_the_provisioner(
    database: Database, simulator: Simulator, sim_clock: ManualClock, sim_api_key: str
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, clock=sim_clock)
    async with make_client(simulator, sim_api_key, sim_clock, breaker=breaker) as client:
        provisioner = make_provisioner(database, client, sim_clock)
        instance_id = await add_instance(database, sim_clock)
        simulator.faults.error_rate = 1.0
        await provisioner.run_once()  # the first failure opens the breaker
        simulator.faults.error_rate = 0.0

        assert await provisioner.run_once() == 0
        assert provisioner.paused
        assert (await load(database, instance_id)).status is Status.PENDING

        sim_clock.advance(300)
        await provisioner.run_once()
        assert not provisioner.paused
        assert (await load(database, instance_id)).status is Status.PROVISIONING


async def test_create_landing_after_the_client_deleted_the_request_is_deleted_at_novita(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    instance_id = await add_instance(database, sim_clock)
    await die_after_create(database, novita, sim_clock, instance_id)
    await api_moves(database, sim_clock, instance_id, Status.DELETING)  # the client deletes it

    fresh = make_provisioner(database, novita, sim_clock, owner="new")
    sim_clock.advance(61)
    with capture_logs() as logs:
        assert await fresh.run_once() == 1

    instance = await load(database, instance_id)
    assert instance.status is Status.DELETING
    [made] = simulator.instances()
    assert instance.novita_instance_id == made.id, "kept so the reconciler confirms the delete"
    assert made.status == "toRemove", "the unwanted instance is being deleted at Novita"
    assert "provision.orphan_deleted" in {e["event"] for e in logs}


async def test_deleted_request_whose_create_never_landed_ends_deleted(
    database: Database, simulator: Simulator, sim_clock: ManualClock, novita: NovitaClient
) -> None:
    instance_id = await add_instance(database, sim_clock)
    async with database.transaction() as conn:
        await claims.claim_pending(conn, owner="old", now=sim_clock.now(), ttl=5, limit=10)
        await claims.record_intent(conn, instance_id, owner="old", now=sim_clock.now(), ttl=5)
    await api_moves(database, sim_clock, instance_id, Status.DELETING)
    fresh = make_provisioner(database, novita, sim_clock, owner="new", create_settle=60)

    sim_clock.advance(61)
    await fresh.run_once()

    assert (await load(database, instance_id)).status is Status.DELETED
    assert simulator.instances() == []


async def test_a_deferral_backoff_survives_a_restart(database_url: str) -> None:
    """The deferrals in a row are counted on the row: a process started afresh on the same
    database waits as long as the old one would have, not from the start of the ladder."""
    settings = load_settings(
        database_url=database_url,
        novita_simulator=True,
        max_retry_attempts=1,
        poll_interval_transitional=5,
        poll_error_max_backoff=300,
    )
    clock = ManualClock()
    async with open_resources(settings, clock=clock, migrate=True) as resources:
        assert resources.simulator is not None
        instance_id = await add_instance(resources.database, clock)
        resources.simulator.faults.error_rate = 1.0
        await Provisioner.from_resources(resources).run_once()
        first = await load(resources.database, instance_id)
    assert (first.status, first.failed_attempts) == (Status.PENDING, 1)
    assert first.next_check_at == clock.now() + timedelta(seconds=5)

    clock.advance(5)
    async with open_resources(settings, clock=clock) as resources:  # a new process
        assert resources.simulator is not None
        resources.simulator.faults.error_rate = 1.0
        provisioner = Provisioner.from_resources(resources)
        await provisioner.run_once()
        second = await load(resources.database, instance_id)
        assert second.failed_attempts == 2
        assert second.next_check_at == clock.now() + timedelta(seconds=10), "5 s doubled"

        resources.simulator.faults.error_rate = 0.0
        clock.advance(10)
        await provisioner.run_once()
        provisioned = await load(resources.database, instance_id)
    assert provisioned.status is Status.PROVISIONING
    assert provisioned.failed_attempts == 0, "a poll of the new instance starts afresh"
