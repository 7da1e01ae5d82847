"""The create options Novita takes as they are: kind (CPU products), tools, network storages
(placed in their cluster), command, entrypoint, minCudaVersion. Validated as Novita's
documentation says, stored, shown on the instance, and passed through to the create."""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins.service import ServiceUnderTest
from tests.support.lifecycle import BODY, Workers, history, status_of

DATASETS_SGP = "3f6c2a1e-8d4b-4c7a-9e2f-5b1d0a7c6e31"
CHECKPOINTS_DE = "a9e1d4c2-6b3f-4f8e-8a1d-2c7b5e9f0d14"


async def create(service: ServiceUnderTest, **fields: Any) -> dict[str, Any]:
    status, created, _ = await service.call("POST", "/api/instances", json={**BODY, **fields})
    assert status == 202, created
    return created  # type: ignore[no-any-return]


async def test_options_are_stored_shown_and_passed_to_novita(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    created = await create(
        service,
        tools=[{"name": "Jupyter", "port": 8889, "type": "http"}],
        networkStorages=[{"Id": DATASETS_SGP, "mountPoint": "/data"}],
        command="python train.py",
        entrypoint="/bin/sh -c",
        minCudaVersion="12.1",
    )
    assert created["kind"] == "gpu"
    assert created["tools"] == [{"name": "Jupyter", "port": 8889, "type": "http"}]
    assert created["networkStorages"] == [{"id": DATASETS_SGP, "mountPoint": "/data"}]
    assert (created["command"], created["entrypoint"], created["minCudaVersion"]) == (
        "python train.py", "/bin/sh -c", "12.1",
    )
    await workers.provisioner.run_once()
    instance = await status_of(service, created["id"])
    assert instance["region"] == "AS-SGP-02" and instance["tools"] == created["tools"]
    made = service.simulator.instance(instance["novitaInstanceId"])
    assert made is not None
    assert made.tools == ["Jupyter"] and 8889 in {p.port for p in made.ports}
    assert made.network_storages == [(DATASETS_SGP, "/data")]
    assert (made.command, made.entrypoint) == ("python train.py", "/bin/sh -c")


async def test_the_requests_cuda_version_wins_over_the_templates(
    service: ServiceUnderTest,
) -> None:
    """Template 212 asks for CUDA 12.4; an image that runs on 12.2 may say so."""
    workers = Workers(service)
    created = await create(service, productName="RTX 3090 24GB", minCudaVersion="12.2")
    await workers.provisioner.run_once()
    instance = await status_of(service, created["id"])
    assert (instance["status"], instance["productId"]) == ("provisioning", "3090.16c92g")


async def test_network_storage_places_the_instance_in_its_cluster(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    created = await create(
        service, productName="A100 SXM4 80GB", networkStorages=[{"id": CHECKPOINTS_DE}]
    )
    await workers.provisioner.run_once()
    instance = await status_of(service, created["id"])
    # Without the storage Singapore's A100 comes first (default priority).
    assert (instance["region"], instance["productId"]) == ("EU-DE-01", "a100.sxm4.80g")
    assert instance["networkStorages"] == [{"id": CHECKPOINTS_DE, "mountPoint": "/network"}]


async def test_an_unknown_network_storage_fails_without_a_create(
    service: ServiceUnderTest,
) -> None:
    workers = Workers(service)
    created = await create(service, networkStorages=[{"Id": "no-such-storage"}])
    await workers.provisioner.run_once()
    instance = await status_of(service, created["id"])
    assert (instance["status"], instance["statusReason"]) == (
        "failed", "network_storage_not_found",
    )
    assert (await history(service, created["id"]))[-1]["detail"]["networkStorages"] == [
        "no-such-storage"
    ]
    assert service.simulator.requests_by_path["/gpu/instance/create"] == 0


async def test_a_cpu_instance_is_made_from_the_cpu_catalogue(service: ServiceUnderTest) -> None:
    workers = Workers(service)
    created = await create(
        service, kind="cpu", productName="CPU 16 vCPU 64GB", templateId=None,
        imageUrl="python:3.12-slim",
    )
    await workers.provisioner.run_once()
    await workers.settle()
    instance = await status_of(service, created["id"])
    assert instance["kind"] == "cpu"
    assert (instance["status"], instance["productId"], instance["region"]) == (
        "running", "cpu.16c64g", "EU-DE-01",
    )
    assert instance["pricePerHour"] == "0.150000"
    made = service.simulator.instance(instance["novitaInstanceId"])
    assert made is not None and made.kind == "cpu"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "tpu"}, "kind"),
        ({"tools": [{"name": "ssh", "port": 2222, "type": "tcp"}]}, "tools.0.port"),
        ({"tools": [{"name": "", "port": 80}]}, "tools.0.name"),
        ({"tools": [{"name": "t", "port": 80, "type": "udp"}]}, "tools.0.type"),
        (
            {"ports": [{"port": p} for p in range(8000, 8010)],
             "tools": [{"name": f"t{n}", "port": 9000 + n} for n in range(6)]},
            "tools",
        ),
        ({"networkStorages": [{"mountPoint": "/x"}]}, "networkStorages.0.Id"),
        ({"networkStorages": [{"Id": "a", "mountPoint": "relative"}]},
         "networkStorages.0.mountPoint"),
        ({"networkStorages": [{"Id": "a"}, {"id": "a"}]}, "networkStorages"),
        ({"networkStorages": [{"Id": f"s{n}"} for n in range(31)]}, "networkStorages"),
        ({"command": "x" * 2048}, "command"),
        ({"entrypoint": ""}, "entrypoint"),
        ({"minCudaVersion": "twelve"}, "minCudaVersion"),
        ({"kind": "cpu", "billingMode": "spot"}, "billingMode"),
    ],
)
async def test_each_bad_option_is_a_422_naming_it(
    service: ServiceUnderTest, overrides: dict[str, Any], field: str
) -> None:
    status, error, _ = await service.call("POST", "/api/instances", json={**BODY, **overrides})
    assert status == 422, error
    fields = [entry["field"] for entry in error["error"]["details"]["fields"]]
    assert field in fields, fields


async def test_fifteen_ports_and_tools_together_are_accepted(service: ServiceUnderTest) -> None:
    await create(
        service,
        ports=[{"port": p} for p in range(8000, 8010)],
        tools=[{"name": f"t{n}", "port": 9000 + n} for n in range(5)],
    )
