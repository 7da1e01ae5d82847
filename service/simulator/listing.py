"""Read-side queries of the v1 API: product filters (§5.2) and instance listing (§5.7)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.simulator import catalogue
from service.simulator.capacity import Capacity
from service.simulator.errors import invalid
from service.simulator.machine import SimInstance
from service.simulator.readings import Readings
from service.simulator.render import render_list_item

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


def query_int(query: Mapping[str, str], key: str, *, default: int, low: int = 0,
              high: int | None = None) -> int:
    raw = query.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(key, "must be an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise invalid(key, f"must be {bounds}")
    return value


def fuzzy(needle: str, haystack: str) -> bool:
    """Every whitespace-separated word of `needle` occurs in `haystack`, ignoring case."""
    hay = haystack.lower()
    return all(word in hay for word in needle.lower().split())


def _inventory(free: int) -> str:
    if free <= 0:
        return "none"
    if free < 5:
        return "low"
    return "normal" if free < 30 else "high"


def _regions(cluster_ids: Iterable[str], form: str) -> list[Any]:
    """A product's `regions` in the reading's form (docs/novita-facts.md)."""
    clusters = [c for cid in cluster_ids if (c := catalogue.cluster_by_id(cid)) is not None]
    if form == "codes":
        return [c.name for c in clusters]
    if form == "ids":
        return [c.id for c in clusters]
    if form == "objects":
        return [{"id": c.id, "name": c.name} for c in clusters]
    return [c.region_display for c in clusters]


def products(
    query: Mapping[str, str], capacity: Capacity, readings: Readings | None = None
) -> list[dict[str, Any]]:
    readings = readings or Readings()
    cluster_id = query.get("clusterId", "")
    if len(cluster_id) > 255:
        raise invalid("clusterId", "length must be between 0 and 255")
    gpu_num = query_int(query, "gpuNum", default=0, high=8)
    name = query.get("productName", "")
    min_cpu = query_int(query, "minCpuPerGpu", default=0)
    min_memory = query_int(query, "minMemoryPerGpu", default=0)
    min_rootfs = query_int(query, "minRootFSSize", default=0)
    billing = query.get("billingMethod", "") or "onDemand"
    if billing not in ("onDemand", "monthly", "spot"):
        raise invalid("billingMethod", "must be onDemand, monthly or spot")
    spot = billing == "spot"
    found = []
    for p in catalogue.PRODUCTS:
        if cluster_id and cluster_id not in p.cluster_ids:
            continue
        if gpu_num > p.max_gpus or p.cpu_per_gpu < min_cpu or p.memory_per_gpu < min_memory:
            continue
        if p.max_rootfs < min_rootfs or billing not in p.billing_methods:
            continue
        if name and not fuzzy(name, p.name):
            continue
        clusters = (cluster_id,) if cluster_id else p.cluster_ids
        free = sum(max(0, capacity.free(p.id, c, spot)) for c in clusters)
        found.append(
            {
                "id": p.id,
                "name": p.name,
                "cpuPerGpu": p.cpu_per_gpu,
                "memoryPerGpu": p.memory_per_gpu,
                "diskPerGpu": p.disk_per_gpu,
                "availableDeploy": free > 0,
                "minRootFS": p.min_rootfs,
                "maxRootFS": p.max_rootfs,
                "minLocalStorage": 0,
                "maxLocalStorage": p.max_local_storage,
                "regions": _regions(p.cluster_ids, readings.regions),
                "price": p.price,
                "monthlyPrice": p.monthly_prices(),
                "billingMethods": list(p.billing_methods),
                # A string, as the docs have it; "0" where there is no spot price.
                "spotPrice": str(p.spot_price) if p.spot_price is not None else "0",
                "inventoryState": _inventory(free),
                "availableGpuNumber": p.max_gpus if free > 0 else 0,
            }
        )
    return found


def malformed_products(count: int) -> list[dict[str, Any]]:
    """Products no client can parse (fault injection): a price that is no number, regions
    that are no list of names. One bad product must not cost the whole catalogue."""
    return [
        {"id": f"broken.{n}", "name": "Broken GPU", "price": "n/a", "regions": [[n]],
         "availableDeploy": "maybe"}
        for n in range(count)
    ]


def cpu_products(query: Mapping[str, str], capacity: Capacity) -> list[dict[str, Any]]:
    cluster_id = query.get("clusterId", "")
    name = query.get("productName", "")
    found = []
    for p in catalogue.CPU_PRODUCTS:
        if cluster_id and cluster_id not in p.cluster_ids:
            continue
        if name and not fuzzy(name, p.name):
            continue
        clusters = (cluster_id,) if cluster_id else p.cluster_ids
        free = sum(max(0, capacity.free(p.id, c)) for c in clusters)
        found.append(
            {
                "id": p.id, "name": p.name, "cpuNum": p.cpu_num, "memorySize": p.memory_size,
                "rootfsSize": p.rootfs_size, "localVolumeSize": p.local_volume_size,
                "availableDeploy": free > 0, "price": p.price,
            }
        )
    return found


def clusters() -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "name": c.name,
            "region": c.region_display,
            "availableGpuType": catalogue.gpu_types_in(c.id),
            "supportNetworkStorage": c.support_network_storage,
            "supportInstanceNetwork": c.support_instance_network,
        }
        for c in catalogue.CLUSTERS
    ]


def page_bounds(query: Mapping[str, str], readings: Readings | None = None,
                default_size: int = DEFAULT_PAGE_SIZE) -> tuple[int, int, int]:
    """(page size, page number as given, offset), counting pages per the `page_base` reading:
    from 0; from 1 with 0 meaning the first page too; or from 1 with 0 refused."""
    base = (readings or Readings()).page_base
    size = query_int(query, "pageSize", default=default_size, high=MAX_PAGE_SIZE) or default_size
    first = 0 if base == "0" else 1
    number = query_int(query, "pageNum", default=first, low=0 if base != "1-strict" else 1)
    return size, number, max(number - first, 0) * size


def _name_matches(wanted: str, name: str, form: str) -> bool:
    if not wanted or form == "ignored":
        return True
    if form == "exact":
        return wanted == name
    return wanted.lower() in name.lower()


def instances(query: Mapping[str, str], all_instances: Iterable[SimInstance],
              readings: Readings | None = None) -> dict[str, Any]:
    readings = readings or Readings()
    size, _, offset = page_bounds(query, readings)
    name = query.get("name", "")
    product_name = query.get("productName", "")
    status = query.get("status", "")
    for key, value in (("name", name), ("productName", product_name)):
        if len(value) > 255:
            raise invalid(key, "length must be between 0 and 255")
    if len(status) > 63:
        raise invalid("status", "length must be between 0 and 63")
    matches = [
        inst for inst in all_instances
        if _name_matches(name, inst.name, readings.name_filter)
        and (not product_name or fuzzy(product_name, inst.product_name))
        and (not status or inst.status == status)
    ]
    # Newest first, like the console; `seq` keeps the order stable under a frozen clock.
    matches.sort(key=lambda inst: inst.seq, reverse=True)
    return {
        "instances": [render_list_item(inst) for inst in matches[offset:offset + size]],
        "total": len(matches),
    }


def templates(query: Mapping[str, str], readings: Readings | None = None) -> dict[str, Any]:
    size, number, offset = page_bounds(query, readings)
    name = query.get("name", "")
    kind = query.get("type", "")
    channel = query.get("channel", "")
    matches = [
        t for t in catalogue.TEMPLATES
        if (not name or fuzzy(name, t.name))
        and (not kind or kind == "instance")
        and (not channel or t.channel == channel)
    ]
    return {
        "template": [t.to_wire(listing=True) for t in matches[offset:offset + size]],
        "pageSize": size,
        "pageNum": number,
        "total": len(matches),
    }


def network_storages(query: Mapping[str, str], readings: Readings | None = None,
                     ) -> dict[str, Any]:
    """`GET /networkstorages/list` (§5.10): pages counted by `pageNo`, like `pageNum`."""
    paging = {"pageSize": query.get("pageSize", ""), "pageNum": query.get("pageNo", "")}
    size, _, offset = page_bounds(paging, readings)
    name = query.get("storageName", "")
    storage_id = query.get("storageId", "")
    matches = [
        n for n in catalogue.NETWORK_STORAGES
        if (not name or fuzzy(name, n.name)) and (not storage_id or n.storage_id == storage_id)
    ]
    return {
        "data": [n.to_wire() for n in matches[offset:offset + size]],
        "total": len(matches),
    }
