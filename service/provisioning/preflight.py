"""Checking a create request against Novita's catalogue, and the plan it would follow.

Used at request time (a 422 naming every bad field; `?dryRun=true`) and again by the
provisioner, which validates requests accepted while Novita could not be reached. Everything
comes from the process's caches (`ProvisioningCaches`), so a burst of requests costs Novita
one catalogue read per `CATALOGUE_CACHE_SECONDS`.

`look_up` does the reads (raising `NovitaError` when Novita cannot answer); `problems` and
`plan` are pure functions of what it found.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.novita import Cluster, NovitaNotFoundError, Product, Template
from service.provisioning.catalogue import ProvisioningCaches
from service.provisioning.selection import (
    CAPACITY_BLOCKED,
    GPU_NUM_UNAVAILABLE,
    NO_PRICE,
    NOT_DEPLOYABLE,
    NOT_OFFERED_HERE,
    ROOTFS_OUT_OF_RANGE,
    Block,
    Ranked,
    SelectionRequest,
    price_per_gpu_hour,
    rank_candidates,
    region_order,
)

BILLING_MODES = ("onDemand", "spot", "monthly")


@dataclass(frozen=True, slots=True)
class CatalogueView:
    """What Novita offers, as far as one request needs to know."""

    clusters: tuple[Cluster, ...]
    products: tuple[Product, ...]  # those offering the requested billing mode
    # Products of the other billing modes, read only when the requested product is not
    # among `products` (to tell "unknown product" from "not sold with that billing mode").
    other_modes: Mapping[str, tuple[Product, ...]] = field(default_factory=dict)
    template: Template | None = None
    template_missing: bool = False


def _norm(text: str) -> str:
    return text.strip().upper()


def _is_asked_for(product: Product, request: SelectionRequest) -> bool:
    """The product the request names (by id, else by name), whatever its billing modes."""
    if request.product_id:
        return product.id == request.product_id
    return bool(request.product_name) and _norm(product.name) == _norm(request.product_name or "")


async def look_up(
    request: SelectionRequest, template_id: str | None, caches: ProvisioningCaches
) -> CatalogueView:
    """Read (through the caches) what checking and planning `request` needs."""
    clusters = await caches.catalogue.clusters()
    other_modes: dict[str, tuple[Product, ...]] = {}
    if request.kind == "cpu":
        products = await caches.catalogue.cpu_products()
    else:
        products = await caches.catalogue.products(request.billing_mode)
    if request.kind != "cpu" and not any(_is_asked_for(p, request) for p in products):
        for mode in BILLING_MODES:
            if mode != request.billing_mode:
                other_modes[mode] = await caches.catalogue.products(mode)
    template, missing = None, False
    if template_id:
        try:
            template = await caches.templates.get(template_id)
        except NovitaNotFoundError:
            missing = True
    return CatalogueView(clusters, products, other_modes, template, missing)


def _problem(field_name: str, message: str, value: Any, valid: list[str] | None = None,
             ) -> dict[str, Any]:
    entry: dict[str, Any] = {"field": field_name, "message": message, "value": value}
    if valid is not None:
        entry["validValues"] = valid
    return entry


def _listed(values: list[str], limit: int = 12) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def problems(
    request: SelectionRequest, template_id: str | None, view: CatalogueView
) -> list[dict[str, Any]]:
    """Every field of `request` that Novita's catalogue says can never work, each with the
    value given and, where there is a list, the valid values."""
    found: list[dict[str, Any]] = []
    codes = sorted({c.name for c in view.clusters if c.name})
    known = {_norm(c.name) for c in view.clusters if c.name} | {
        _norm(c.id) for c in view.clusters
    }
    wanted = [("region", request.preferred_region)] if request.preferred_region else []
    wanted += [(f"regions.{i}", region) for i, region in enumerate(request.regions)]
    for field_name, region in wanted:
        if region is not None and _norm(region) not in known:
            found.append(_problem(
                field_name,
                f"Novita has no region {region!r}; valid regions: {_listed(codes)}",
                region,
                codes,
            ))
    found += _product_problems(request, view)
    if template_id and view.template_missing:
        found.append(_problem("templateId", f"Novita has no template {template_id!r}",
                              template_id))
    return found


def _product_problems(request: SelectionRequest, view: CatalogueView) -> list[dict[str, Any]]:
    if any(_is_asked_for(p, request) for p in view.products):
        return []
    everything = [*view.products, *(p for ps in view.other_modes.values() for p in ps)]
    modes = sorted(
        mode
        for mode, products in view.other_modes.items()
        if any(_is_asked_for(p, request) for p in products)
    )
    what = (
        f"product {request.product_id!r}" if request.product_id
        else f"product {request.product_name!r}"
    )
    if modes:
        return [_problem(
            "billingMode",
            f"Novita does not sell {what} with billing mode {request.billing_mode!r}; "
            f"it offers {', '.join(modes)}",
            request.billing_mode,
            modes,
        )]
    if request.product_id:
        ids = sorted({p.id for p in everything})
        return [_problem(
            "productId",
            f"Novita has no product with id {request.product_id!r}; valid ids: {_listed(ids)}",
            request.product_id,
            ids,
        )]
    names = sorted({p.name for p in everything if p.name})
    given = request.product_name or ""
    by_folded = {name.casefold(): name for name in names}
    close = [
        by_folded[m]
        for m in difflib.get_close_matches(given.casefold(), list(by_folded), n=3, cutoff=0.5)
    ]
    hint = (
        f"; did you mean {' or '.join(repr(c) for c in close)}?" if close
        else f"; valid names: {_listed(names)}"
    )
    return [_problem("productName", f"Novita has no product named {given!r}{hint}", given,
                     names)]


# -- the plan of a dry run ---------------------------------------------------------------

_SKIPPED = {
    NOT_DEPLOYABLE: "not deployable now: Novita reports no free capacity for it",
    ROOTFS_OUT_OF_RANGE: "the root disk size is outside this product's range",
    GPU_NUM_UNAVAILABLE: "fewer GPUs free on one machine than the request's gpuNum",
    NO_PRICE: "no price for this billing mode: a product without a price is never chosen",
    CAPACITY_BLOCKED: "no capacity here a moment ago (INSUFFICIENT_RESOURCE): skipped until "
    "CAPACITY_BLOCK_SECONDS pass",
}


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _row(ranked: Ranked, request: SelectionRequest) -> dict[str, Any]:
    per_gpu = per_hour = None
    if ranked.price is not None:
        hourly = price_per_gpu_hour(ranked.price, request.billing_mode)
        per_gpu, per_hour = _money(hourly), _money(hourly * request.gpu_num)
    return {
        "region": ranked.region,
        "clusterId": ranked.cluster_id,
        "productId": ranked.product.id,
        "productName": ranked.product.name,
        "pricePerGpuHour": per_gpu,
        "pricePerHour": per_hour,
        "rootfsSize": ranked.rootfs_size,
    }


def plan(
    request: SelectionRequest, view: CatalogueView, blocked: Collection[Block]
) -> dict[str, Any]:
    """Where the request would land and why: the chosen region, cluster, product and price,
    then every region x product pair considered, in the order a create walks them (the
    candidates numbered by `rank`; the others with the reason they are skipped)."""
    rows: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    rank = 0
    clusters = {c.name: c for c in view.clusters if c.name}
    for ranked in rank_candidates(request, view.products, view.clusters, blocked=blocked):
        if ranked.skipped == NOT_OFFERED_HERE or not ranked.product.offered_in(
            clusters[ranked.region]
        ):
            continue  # not sold in that region at all: not worth a line
        row = _row(ranked, request)
        if ranked.skipped is None:
            rank += 1
            row.update(rank=rank, chosen=rank == 1)
            row["reason"] = (
                "chosen: the cheapest deployable product in the first region (in order) "
                "that has one"
                if rank == 1
                else f"fallback {rank - 1}: tried if those before it have no capacity"
            )
            if rank == 1:
                chosen = _row(ranked, request)
        else:
            row.update(
                rank=None, chosen=False, reason=_SKIPPED.get(ranked.skipped, ranked.skipped)
            )
        rows.append(row)
    return {
        "dryRun": True,
        "chosen": chosen,
        "billingMode": request.billing_mode,
        "gpuNum": request.gpu_num,
        "regionOrder": region_order(view.clusters, request.preferred_region, request.regions),
        "candidates": rows,
        "message": (
            "nothing was created"
            if chosen
            else "nothing was created; no region has a deployable product that fits the "
            "request right now, so a create would fail with no_capacity"
        ),
    }
