"""Parsing Novita's loose JSON into frozen typed objects."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from service.novita.schemas import (
    Cluster,
    CreateInstanceRequest,
    EnvVar,
    Instance,
    NetworkStorageMount,
    PortSpec,
    Product,
    RegistryAuth,
    Template,
    Tool,
)

PRODUCT = {
    "id": "4090.16c62g",
    "name": "RTX 4090 24GB",
    "cpuPerGpu": "16",
    "memoryPerGpu": 62,
    "diskPerGpu": "100",
    "availableDeploy": True,
    "minRootFS": 10,
    "maxRootFS": "500",
    "regions": ["AS-SGP-02 (Singapore)", "CN-HK-01 (Hong Kong)", "US-CA-06"],
    "price": "35000",
    "spotPrice": 17500,
    "monthlyPrice": [{"price": 20_000_000, "month": 3}, {"price": "7000000", "month": 1}],
    "billingMethods": ["onDemand", "spot", "monthly"],
    "inventoryState": "low",
    "availableGpuNumber": "4",
    "somethingNew": {"nested": True},
}


def test_product_numbers_as_strings_and_extras_ignored() -> None:
    product = Product.model_validate(PRODUCT)
    assert product.cpu_per_gpu == 16
    assert product.max_rootfs == 500
    assert product.available_gpu_number == 4
    assert not hasattr(product, "somethingNew")


@pytest.mark.parametrize(
    ("raw", "usd"),
    [(35000, "0.35"), ("35000", "0.35"), ("123", "0.00123"), (1, "0.00001"), (35000.0, "0.35")],
)
def test_prices_are_hundred_thousandths_of_a_dollar(raw: object, usd: str) -> None:
    product = Product.model_validate({"id": "p", "price": raw, "spotPrice": raw})
    assert product.price == Decimal(usd)
    assert product.spot_price == Decimal(usd)
    assert isinstance(product.price, Decimal)


@pytest.mark.parametrize("raw", ["", None, 0, "0"])
def test_missing_or_zero_price_is_none(raw: object) -> None:
    product = Product.model_validate({"id": "p", "price": raw, "spotPrice": raw})
    assert product.price is None
    assert product.spot_price is None


def test_region_codes_come_from_display_names() -> None:
    product = Product.model_validate(PRODUCT)
    assert product.regions[0] == "AS-SGP-02 (Singapore)"
    assert product.region_codes == ("AS-SGP-02", "CN-HK-01", "US-CA-06")
    assert Product.model_validate({"id": "p", "regions": None}).region_codes == ()


def test_price_for_each_billing_mode() -> None:
    product = Product.model_validate(PRODUCT)
    assert product.price_for("onDemand") == Decimal("0.35")
    assert product.price_for("spot") == Decimal("0.175")
    assert product.price_for("monthly") == Decimal("70")  # the shortest term
    assert product.price_for("prepaid") is None


def test_price_for_a_mode_the_product_does_not_offer_is_none() -> None:
    product = Product.model_validate({**PRODUCT, "billingMethods": ["onDemand"]})
    assert product.price_for("spot") is None
    assert product.price_for("onDemand") == Decimal("0.35")
    no_methods = Product.model_validate({**PRODUCT, "billingMethods": []})
    assert no_methods.price_for("onDemand") == Decimal("0.35")
    assert no_methods.price_for("spot") is None


def test_models_are_frozen() -> None:
    product = Product.model_validate(PRODUCT)
    with pytest.raises(ValidationError):
        product.price = Decimal(1)  # type: ignore[misc]


def test_cluster() -> None:
    cluster = Cluster.model_validate(
        {
            "id": "as-sgp-2",
            "name": "AS-SGP-02",
            "availableGpuType": ["RTX 4090"],
            "supportNetworkStorage": "true",
            "supportInstanceNetwork": "",
            "region": "",
        }
    )
    assert cluster.available_gpu_types == ("RTX 4090",)
    assert cluster.support_network_storage is True
    assert cluster.support_instance_network is False
    assert cluster.region is None


def test_template_capital_id_grouped_ports_and_hidden_env_values() -> None:
    template = Template.model_validate(
        {
            "Id": 212,
            "name": "ComfyUI",
            "image": "ghcr.io/x/comfy:1",
            "imageAuth": "",
            "ports": [{"type": "http", "ports": [8188, "8888"]}, {"type": "tcp", "ports": [22]}],
            "envs": [{"key": "HF_TOKEN", "value": "hf_secret"}],
            "rootfsSize": "60",
            "startCommand": "",
            "createdAt": "1713162260",
            "recommendCards": [{"gpuSpecId": "4090.18c.60g", "cardNum": 1}],
        }
    )
    assert template.id == "212"
    assert template.image_auth is None
    assert template.start_command is None
    assert template.rootfs_size == 60
    assert template.ports == (
        PortSpec(port=8188, type="http"),
        PortSpec(port=8888, type="http"),
        PortSpec(port=22, type="tcp"),
    )
    assert template.envs[0].value == "hf_secret"
    assert "hf_secret" not in repr(template)
    assert template.created_at == datetime(2024, 4, 15, 6, 24, 20, tzinfo=UTC)


def test_template_accepts_lower_case_id() -> None:
    assert Template.model_validate({"id": "7"}).id == "7"


def test_registry_auth_drops_the_password() -> None:
    auth = RegistryAuth.model_validate(
        {"id": "a" * 32, "name": "ghcr", "username": "bot", "password": "hunter2-secret"}
    )
    assert auth.username == "bot"
    assert "hunter2" not in repr(auth)
    assert "hunter2" not in str(auth.model_dump())
    assert not hasattr(auth, "password")


INSTANCE = {
    "id": "0123456789abcdef",
    "name": "inst_abc",
    "clusterId": "as-sgp-2",
    "clusterName": "AS-SGP-02",
    "status": "running",
    "statusError": {"state": "", "message": ""},
    "cpuNum": "16",
    "memory": "62",
    "gpuNum": "1",
    "portMappings": [{"port": 8888, "endpoint": "https://x-8888.gw", "type": "http"}],
    "productId": "4090.16c62g",
    "productName": "RTX 4090 24GB",
    "billingMode": "",
    "spotStatus": "",
    "spotReclaimTime": "0",
    "endTime": "-1",
    "createdAt": "1767225600",
    "lastStartedAt": 1767225700,
    "connectComponentSSH": {"sshCommand": "ssh ...", "password": "root-pass"},
    "sshPassword": "root-pass",
    "envs": [{"key": "TOKEN", "value": "env-secret"}],
}


def test_instance_loose_fields() -> None:
    instance = Instance.model_validate(INSTANCE)
    assert instance.gpu_num == 1
    assert instance.cpu_num == 16
    assert instance.memory == 62
    assert instance.status_error is None  # all-empty statusError means "no error"
    assert instance.billing_mode is None
    assert instance.spot_status is None
    assert instance.spot_reclaim_time is None
    assert instance.end_time is None  # "-1" = pay as you go
    assert instance.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert instance.started_at == datetime(2026, 1, 1, 0, 1, 40, tzinfo=UTC)
    assert instance.port_mappings[0].endpoint == "https://x-8888.gw"
    assert "root-pass" not in repr(instance)
    assert "env-secret" not in repr(instance)


def test_instance_status_error_spot_and_missing_port_mappings() -> None:
    instance = Instance.model_validate(
        {
            "Id": "abc",
            "status": "exited",
            "statusError": {"state": "failed", "message": "image pull failed"},
            "spotStatus": "reclaiming",
            "spotReclaimTime": "1767225600",
            "portMappings": None,
            "memory": "",
        }
    )
    assert instance.id == "abc"
    assert instance.status_error is not None
    assert instance.status_error.message == "image pull failed"
    assert instance.spot_reclaim_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert instance.port_mappings == ()
    assert instance.memory is None


def test_a_fractional_number_where_a_whole_one_belongs_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Instance.model_validate({"id": "x", "gpuNum": "1.5"})


def test_create_request_payload_uses_novita_names() -> None:
    request = CreateInstanceRequest(
        name="inst_abc",
        product_id="4090.16c62g",
        gpu_num=2,
        rootfs_size=60,
        image_url="ghcr.io/x/comfy:1",
        image_auth="bot:registry-pass",
        image_auth_id="a" * 32,
        ports=[PortSpec(port=8888, type="http"), (22, "tcp")],
        envs=(EnvVar(key="A", value="1"),),
        tools=(Tool(name="Jupyter", port=8888, type="http"),),
        command="python serve.py",
        entrypoint="/bin/sh",
        cluster_id="as-sgp-2",
        network_storages=(NetworkStorageMount(id="st-1", mount_point="/data"),),
        network_id="net-1",
        kind="gpu",
        month=1,
        billing_mode="monthly",
        auto_renew=True,
        auto_renew_month=3,
        min_cuda_version="12.4",
    )
    assert "registry-pass" not in repr(request)
    assert request.to_payload() == {
        "name": "inst_abc",
        "productId": "4090.16c62g",
        "gpuNum": 2,
        "rootfsSize": 60,
        "imageUrl": "ghcr.io/x/comfy:1",
        "imageAuth": "bot:registry-pass",
        "imageAuthId": "a" * 32,
        "ports": "8888/http,22/tcp",
        "envs": [{"key": "A", "value": "1"}],
        "tools": [{"name": "Jupyter", "port": "8888", "type": "http"}],
        "command": "python serve.py",
        "entrypoint": "/bin/sh",
        "clusterId": "as-sgp-2",
        "networkStorages": [{"Id": "st-1", "mountPoint": "/data"}],
        "networkId": "net-1",
        "kind": "gpu",
        "month": 1,
        "billingMode": "monthly",
        "autoRenew": True,
        "autoRenewMonth": 3,
        "minCudaVersion": "12.4",
    }


def test_create_request_leaves_out_unset_fields() -> None:
    request = CreateInstanceRequest(product_id="p", image_url="img", rootfs_size=10)
    assert request.to_payload() == {
        "name": "",
        "productId": "p",
        "gpuNum": 1,
        "rootfsSize": 10,
        "imageUrl": "img",
        "kind": "gpu",
    }


def test_create_request_validates_gpu_count() -> None:
    with pytest.raises(ValidationError):
        CreateInstanceRequest(product_id="p", image_url="img", gpu_num=9)


@pytest.mark.parametrize(
    "regions",
    [
        ["AS-SGP-02 (Singapore)"],
        ["AS-SGP-02"],
        ["as-sgp-2"],
        [{"id": "as-sgp-2", "name": "AS-SGP-02"}],
        [{"clusterId": "as-sgp-2"}],
        [{"name": "as-sgp-02 (singapore)"}],
    ],
)
def test_regions_in_every_form_name_their_cluster(regions: list[object]) -> None:
    product = Product.model_validate({"id": "p", "regions": regions})
    singapore = Cluster(id="as-sgp-2", name="AS-SGP-02", region="AS-SGP-02 (Singapore)")
    hong_kong = Cluster(id="cn-hongkong-1", name="CN-HK-01")
    assert product.offered_in(singapore)
    assert not product.offered_in(hong_kong)


def test_no_regions_means_everywhere_and_a_bad_region_fails_the_product() -> None:
    anywhere = Product.model_validate({"id": "p", "regions": None})
    assert anywhere.offered_in(Cluster(id="x", name="X"))
    with pytest.raises(ValidationError):
        Product.model_validate({"id": "p", "regions": [["nested"]]})


@pytest.mark.parametrize("raw", ["0", "", None, "0.0"])
def test_spot_price_absent_or_zero_is_no_spot_price(raw: object) -> None:
    wire = {"id": "p", "price": 35000, "billingMethods": ["onDemand", "spot"]}
    if raw is not None:
        wire["spotPrice"] = raw
    product = Product.model_validate(wire)
    assert product.spot_price is None and product.price_for("spot") is None
