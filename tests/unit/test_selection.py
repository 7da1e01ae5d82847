"""Product selection (docs/architecture.md): candidates and their order, as a pure function."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from service.novita import Cluster, Product
from service.provisioning.selection import (
    SelectionRequest,
    any_product_matches,
    price_per_gpu_hour,
    region_order,
    select_candidates,
)

CLUSTERS = tuple(
    Cluster(id=cid, name=name)
    for cid, name in [
        ("us-ca-06", "US-CA-06"),
        ("as-in-1", "AS-IN-01"),
        ("cn-hongkong-1", "CN-HK-01"),
        ("as-sgp-2", "AS-SGP-02"),
        ("eu-de-01", "EU-DE-01"),
    ]
)


def product(pid: str, regions: list[str], price: int | None = 35000, **extra: Any) -> Product:
    wire: dict[str, Any] = {
        "id": pid,
        "name": extra.pop("name", "RTX 4090 24GB"),
        "availableDeploy": extra.pop("availableDeploy", True),
        "minRootFS": 10,
        "maxRootFS": 500,
        "regions": regions,
        "price": price,
        "spotPrice": extra.pop("spotPrice", ""),
        "billingMethods": extra.pop("billingMethods", ["onDemand"]),
        "availableGpuNumber": extra.pop("availableGpuNumber", 8),
    }
    wire.update(extra)
    return Product.model_validate(wire)


def request(**overrides: Any) -> SelectionRequest:
    values: dict[str, Any] = {
        "product_name": "RTX 4090 24GB",
        "product_id": None,
        "billing_mode": "onDemand",
        "gpu_num": 1,
        "rootfs_size": 50,
    }
    values.update(overrides)
    return SelectionRequest(**values)


def pairs(candidates: list[Any]) -> list[tuple[str, str]]:
    return [(c.region, c.product.id) for c in candidates]


def test_default_priority_then_every_other_region_in_novita_order() -> None:
    assert region_order(CLUSTERS, None, ()) == [
        "AS-SGP-02",
        "CN-HK-01",
        "AS-IN-01",
        "US-CA-06",
        "EU-DE-01",
    ]


def test_preferred_region_first_then_custom_list_then_the_rest() -> None:
    order = region_order(CLUSTERS, "eu-de-01", ["us-ca-06", "AS-SGP-02", "MARS-01"])
    assert order == ["EU-DE-01", "US-CA-06", "AS-SGP-02", "AS-IN-01", "CN-HK-01"]


def test_cheapest_first_within_a_region_and_regions_in_priority_order() -> None:
    products = [
        product("sg.dear", ["AS-SGP-02 (Singapore)"], price=40000),
        product("sg.cheap", ["AS-SGP-02 (Singapore)"], price=30000),
        product("in.cheapest", ["AS-IN-01 (India)"], price=10000),
    ]
    candidates = select_candidates(request(), products, CLUSTERS)
    assert pairs(candidates) == [
        ("AS-SGP-02", "sg.cheap"),
        ("AS-SGP-02", "sg.dear"),
        ("AS-IN-01", "in.cheapest"),
    ]
    first = candidates[0]
    assert first.cluster_id == "as-sgp-2" and first.price == Decimal("0.3")
    assert first.rootfs_size == 50


def test_empty_regions_means_every_cluster() -> None:
    candidates = select_candidates(request(), [product("anywhere", [])], CLUSTERS)
    assert [c.region for c in candidates] == [
        "AS-SGP-02",
        "CN-HK-01",
        "AS-IN-01",
        "US-CA-06",
        "EU-DE-01",
    ]


def test_missing_or_zero_price_never_wins() -> None:
    products = [
        product("free", ["AS-SGP-02 (Singapore)"], price=0),
        product("unpriced", ["AS-SGP-02 (Singapore)"], price=None),
        product("priced", ["AS-SGP-02 (Singapore)"], price=90000),
    ]
    assert pairs(select_candidates(request(), products, CLUSTERS)) == [("AS-SGP-02", "priced")]


def test_billing_mode_must_be_offered_and_its_own_price_is_used() -> None:
    products = [
        product("od-only", ["AS-SGP-02 (Singapore)"], price=10000),
        product(
            "spot",
            ["AS-SGP-02 (Singapore)"],
            price=35000,
            spotPrice="17500",
            billingMethods=["onDemand", "spot"],
        ),
    ]
    candidates = select_candidates(request(billing_mode="spot"), products, CLUSTERS)
    assert pairs(candidates) == [("AS-SGP-02", "spot")]
    assert candidates[0].price == Decimal("0.175")


def test_name_or_id_must_match_exactly() -> None:
    products = [
        product("a", ["AS-SGP-02 (Singapore)"]),
        product("b", ["AS-SGP-02 (Singapore)"], name="RTX 4090 24GB PCIe"),
    ]
    assert pairs(select_candidates(request(product_name="rtx 4090 24gb"), products, CLUSTERS)) == [
        ("AS-SGP-02", "a")
    ]
    by_id = request(product_name=None, product_id="b")
    assert pairs(select_candidates(by_id, products, CLUSTERS)) == [("AS-SGP-02", "b")]


def test_limits_and_deployability_filter_candidates() -> None:
    products = [
        product("full", ["AS-SGP-02 (Singapore)"], availableDeploy=False),
        product("small-disk", ["AS-SGP-02 (Singapore)"], maxRootFS=40),
        product("few-gpus", ["AS-SGP-02 (Singapore)"], availableGpuNumber=1),
        product("fits", ["AS-SGP-02 (Singapore)"]),
    ]
    candidates = select_candidates(request(gpu_num=2, rootfs_size=50), products, CLUSTERS)
    assert pairs(candidates) == [("AS-SGP-02", "fits")]


def test_rootfs_defaults_to_the_product_minimum() -> None:
    products = [product("p", ["AS-SGP-02 (Singapore)"], minRootFS=20)]
    assert select_candidates(request(rootfs_size=None), products, CLUSTERS)[0].rootfs_size == 20


def test_blocked_region_product_pairs_are_skipped() -> None:
    products = [product("p", ["AS-SGP-02 (Singapore)", "CN-HK-01 (Hong Kong)"])]
    candidates = select_candidates(
        request(), products, CLUSTERS, blocked=frozenset({("AS-SGP-02", "p")})
    )
    assert pairs(candidates) == [("CN-HK-01", "p")]


def test_regions_without_a_cluster_are_not_candidates() -> None:
    products = [product("p", ["MARS-01 (Olympus)"])]
    assert select_candidates(request(), products, CLUSTERS) == []
    assert any_product_matches(request(), products)


def test_nothing_matching_is_told_apart_from_no_capacity() -> None:
    products = [product("p", [], availableDeploy=False)]
    assert select_candidates(request(), products, CLUSTERS) == []
    assert any_product_matches(request(), products)
    assert not any_product_matches(request(product_name="H200"), products)


def test_monthly_price_is_recorded_per_hour() -> None:
    assert price_per_gpu_hour(Decimal("200"), "monthly") == Decimal("0.277778")
    assert price_per_gpu_hour(Decimal("0.35"), "onDemand") == Decimal("0.350000")
