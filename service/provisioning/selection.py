"""Product selection (DESIGN §9.2): which product to create in which region, in what order.

Pure: given Novita's products and clusters, the request and the blocked region x product
pairs, return the candidates to try, best first. Region order is the preferred region,
then the request's own list (or the default priority), then every other region Novita
offers; within a region the cheapest price for the billing mode comes first. A product
without a (non-zero) price for the mode never wins: it is not a candidate at all.

Product `regions` are display names ("AS-SGP-02 (Singapore)"); clusters are named by the
region code and carry the id that create takes as `clusterId`. An empty `regions` list
means every cluster. Regions a request names may be codes or cluster ids, in any case.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from service.domain import Instance
from service.novita import Cluster, Product

DEFAULT_REGION_PRIORITY: tuple[str, ...] = ("AS-SGP-02", "CN-HK-01", "AS-IN-01")
MIN_ROOTFS_GB = 10  # Novita raises smaller sizes to this (novita-api.md §5.5)

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

    @classmethod
    def for_instance(cls, instance: Instance, rootfs_size: int | None) -> SelectionRequest:
        return cls(
            product_name=instance.product_name,
            product_id=instance.product_id,
            billing_mode=instance.billing_mode,
            gpu_num=instance.gpu_num,
            rootfs_size=rootfs_size,
            preferred_region=instance.preferred_region,
            regions=instance.regions,
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
    if not product.available_deploy:
        return False
    rootfs = rootfs_for(product, request.rootfs_size)
    if product.min_rootfs is not None and rootfs < product.min_rootfs:
        return False
    if product.max_rootfs is not None and rootfs > product.max_rootfs:
        return False
    return product.available_gpu_number is None or request.gpu_num <= product.available_gpu_number


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


def _offered_in(product: Product, region: str) -> bool:
    codes = {_norm(code) for code in product.region_codes}
    return not codes or _norm(region) in codes


def select_candidates(
    request: SelectionRequest,
    products: Iterable[Product],
    clusters: Sequence[Cluster],
    *,
    blocked: Collection[Block] = frozenset(),
    default_priority: Sequence[str] = DEFAULT_REGION_PRIORITY,
) -> list[Candidate]:
    """Every (region, product) worth a create, in the order to try them."""
    priced = [
        (price, product)
        for product in products
        if matches_request(product, request)
        and fits(product, request)
        and (price := product.price_for(request.billing_mode)) is not None
        and price > 0
    ]
    cluster_ids = {c.name: c.id for c in clusters if c.name}
    candidates: list[Candidate] = []
    for region in region_order(
        clusters, request.preferred_region, request.regions, default_priority
    ):
        here = [
            (price, product)
            for price, product in priced
            if _offered_in(product, region) and (region, product.id) not in blocked
        ]
        here.sort(key=lambda pair: (pair[0], pair[1].id))
        candidates += [
            Candidate(
                product=product,
                region=region,
                cluster_id=cluster_ids[region],
                price=price,
                rootfs_size=rootfs_for(product, request.rootfs_size),
            )
            for price, product in here
        ]
    return candidates


def any_product_matches(request: SelectionRequest, products: Iterable[Product]) -> bool:
    """Whether Novita sells what was asked at all (else the failure is not about capacity)."""
    return any(matches_request(product, request) for product in products)


HOURS_PER_MONTH = Decimal(720)  # 30 days: how a monthly price becomes a per-hour figure
_PRICE_QUANTUM = Decimal("0.000001")  # the price column's scale


def price_per_gpu_hour(price: Decimal, billing_mode: str) -> Decimal:
    """USD per GPU-hour to record: Novita quotes monthly billing per GPU-month."""
    hourly = price / HOURS_PER_MONTH if billing_mode == "monthly" else price
    return hourly.quantize(_PRICE_QUANTUM)
