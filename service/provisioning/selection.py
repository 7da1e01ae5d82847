"""Product selection (docs/architecture.md): which product to create in which region, in what order.

Pure: given Novita's products and clusters, the request and the blocked region x product
pairs, return the candidates to try, best first. Region order is the preferred region,
then the request's own list (or the default priority), then every other region Novita
offers; within a region the cheapest price for the billing mode comes first. A product
without a (non-zero) price for the mode never wins: it is not a candidate at all.

Product `regions` may be display names ("AS-SGP-02 (Singapore)"), bare codes, cluster ids
or objects (docs/novita-facts.md): `Product.offered_in` matches any of them against a cluster,
which is named by the region code and carries the id that create takes as `clusterId`. An
empty `regions` list means every cluster. Regions a request names may be codes or cluster
ids, in any case.

`rank_candidates` is the same walk with its working shown: every (region, product) pair of
a matching product, in order, each with the reason it would be skipped (None = tried).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from service.domain import Instance
from service.novita import Cluster, Product

DEFAULT_REGION_PRIORITY: tuple[str, ...] = ("AS-SGP-02", "CN-HK-01", "AS-IN-01")
MIN_ROOTFS_GB = 10  # Novita raises smaller sizes to this (docs/novita-facts.md)

Block = tuple[str, str]  # region code, product id


@dataclass(frozen=True, slots=True)
class SelectionRequest:
    product_name: str | None
    product_id: str | None
    billing_mode: str
    gpu_num: int
    rootfs_size: int | None
    preferred_region: str | None = None
    regions: tuple[str, ...] = ()
    # Only these clusters (ids) will do, e.g. where the network storages to mount live;
    # empty: any.
    cluster_ids: tuple[str, ...] = ()
    kind: str = "gpu"  # "cpu": chosen among Novita's CPU products

    @classmethod
    def for_instance(
        cls, instance: Instance, rootfs_size: int | None, cluster_ids: tuple[str, ...] = ()
    ) -> SelectionRequest:
        return cls(
            product_name=instance.product_name,
            product_id=instance.product_id,
            billing_mode=instance.billing_mode,
            gpu_num=instance.gpu_num,
            rootfs_size=rootfs_size,
            preferred_region=instance.preferred_region,
            regions=instance.regions,
            cluster_ids=cluster_ids,
            kind=str((instance.launch or {}).get("kind", "gpu")),
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    product: Product
    region: str  # region code, e.g. "AS-SGP-02"
    cluster_id: str
    price: Decimal  # USD per GPU-hour (per GPU-month for monthly), as Novita quotes the mode
    rootfs_size: int


def _norm(text: str) -> str:
    return text.strip().upper()


def matches_request(product: Product, request: SelectionRequest) -> bool:
    """Same product (by id, else by exact name) offering the billing mode."""
    if request.product_id:
        if product.id != request.product_id:
            return False
    elif request.product_name:
        if _norm(product.name) != _norm(request.product_name):
            return False
    else:
        return False
    return product.offers(request.billing_mode)


def rootfs_for(product: Product, requested: int | None) -> int:
    if requested is not None:
        return max(requested, MIN_ROOTFS_GB)
    return max(product.min_rootfs or MIN_ROOTFS_GB, MIN_ROOTFS_GB)


def fits(product: Product, request: SelectionRequest) -> bool:
    """Deployable now, and the request's size is within the product's limits."""
    return unfit_reason(product, request) in (None, NO_PRICE)


def region_order(
    clusters: Sequence[Cluster],
    preferred: str | None,
    custom: Sequence[str],
    default_priority: Sequence[str] = DEFAULT_REGION_PRIORITY,
) -> list[str]:
    """Region codes to try, in order, each once; only regions Novita has a cluster for."""
    by_code = {_norm(c.name): c.name for c in clusters if c.name}
    by_id = {_norm(c.id): c.name for c in clusters if c.name}

    def resolve(region: str) -> str | None:
        key = _norm(region)
        return by_code.get(key) or by_id.get(key)

    wanted: list[str | None] = [resolve(preferred)] if preferred else []
    wanted += [resolve(r) for r in (custom or default_priority)]
    wanted += [c.name for c in clusters if c.name]
    order: list[str] = []
    for region in wanted:
        if region is not None and region not in order:
            order.append(region)
    return order


# Why a (region, product) pair of a matching product is not tried (`Ranked.skipped`).
NOT_DEPLOYABLE = "not_deployable"
ROOTFS_OUT_OF_RANGE = "rootfs_out_of_range"
GPU_NUM_UNAVAILABLE = "gpu_num_unavailable"
NO_PRICE = "no_price_for_billing_mode"
NOT_OFFERED_HERE = "not_offered_in_region"
CLUSTER_EXCLUDED = "network_storage_elsewhere"
CAPACITY_BLOCKED = "capacity_recently_exhausted"


@dataclass(frozen=True, slots=True)
class Ranked:
    """One (region, product) pair of a product that matches the request, in walk order."""

    product: Product
    region: str
    cluster_id: str
    price: Decimal | None
    rootfs_size: int
    skipped: str | None  # None: a candidate; else why not (one of the constants above)

    @property
    def candidate(self) -> Candidate:
        assert self.skipped is None and self.price is not None
        return Candidate(self.product, self.region, self.cluster_id, self.price, self.rootfs_size)


def unfit_reason(product: Product, request: SelectionRequest) -> str | None:
    """Why the product cannot take this request anywhere now; None if it can."""
    if not product.available_deploy:
        return NOT_DEPLOYABLE
    rootfs = rootfs_for(product, request.rootfs_size)
    if product.min_rootfs is not None and rootfs < product.min_rootfs:
        return ROOTFS_OUT_OF_RANGE
    if product.max_rootfs is not None and rootfs > product.max_rootfs:
        return ROOTFS_OUT_OF_RANGE
    if product.available_gpu_number is not None and request.gpu_num > product.available_gpu_number:
        return GPU_NUM_UNAVAILABLE
    price = product.price_for(request.billing_mode)
    if price is None or price <= 0:
        return NO_PRICE
    return None


def rank_candidates(
    request: SelectionRequest,
    products: Iterable[Product],
    clusters: Sequence[Cluster],
    *,
    blocked: Collection[Block] = frozenset(),
    default_priority: Sequence[str] = DEFAULT_REGION_PRIORITY,
) -> list[Ranked]:
    """Every region x matching product in the order they would be tried, with skip reasons.

    Within a region: candidates cheapest first, then the skipped ones (by product id).
    """
    matching = [p for p in products if matches_request(p, request)]
    by_name = {c.name: c for c in clusters if c.name}
    ranked: list[Ranked] = []
    for region in region_order(
        clusters, request.preferred_region, request.regions, default_priority
    ):
        cluster = by_name[region]
        here: list[Ranked] = []
        for product in matching:
            price = product.price_for(request.billing_mode)
            reason = unfit_reason(product, request)
            if reason is None and not product.offered_in(cluster):
                reason = NOT_OFFERED_HERE
            if reason is None and request.cluster_ids and cluster.id not in request.cluster_ids:
                reason = CLUSTER_EXCLUDED
            if reason is None and (region, product.id) in blocked:
                reason = CAPACITY_BLOCKED
            here.append(
                Ranked(
                    product=product,
                    region=region,
                    cluster_id=cluster.id,
                    price=price,
                    rootfs_size=rootfs_for(product, request.rootfs_size),
                    skipped=reason,
                )
            )
        here.sort(
            key=lambda r: (r.skipped is not None, r.price or Decimal(0), r.product.id)
        )
        ranked += here
    return ranked


def select_candidates(
    request: SelectionRequest,
    products: Iterable[Product],
    clusters: Sequence[Cluster],
    *,
    blocked: Collection[Block] = frozenset(),
    default_priority: Sequence[str] = DEFAULT_REGION_PRIORITY,
) -> list[Candidate]:
    """Every (region, product) worth a create, in the order to try them."""
    ranked = rank_candidates(
        request, products, clusters, blocked=blocked, default_priority=default_priority
    )
    return [r.candidate for r in ranked if r.skipped is None]


def any_product_matches(request: SelectionRequest, products: Iterable[Product]) -> bool:
    """Whether Novita sells what was asked at all (else the failure is not about capacity)."""
    return any(matches_request(product, request) for product in products)


HOURS_PER_MONTH = Decimal(720)  # 30 days: how a monthly price becomes a per-hour figure
_PRICE_QUANTUM = Decimal("0.000001")  # the price column's scale


def price_per_gpu_hour(price: Decimal, billing_mode: str) -> Decimal:
    """USD per GPU-hour to record: Novita quotes monthly billing per GPU-month."""
    hourly = price / HOURS_PER_MONTH if billing_mode == "monthly" else price
    return hourly.quantize(_PRICE_QUANTUM)
