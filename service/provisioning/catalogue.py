"""Short-lived memory of Novita's catalogue and of where capacity recently ran out.

One products call serves every region (docs/architecture.md), reused for a short TTL and
read once however many ask at once (`memo`), so a burst of requests does not cost one
call each; clusters change even less often. Capacity blocks
remember a region x product that answered INSUFFICIENT_RESOURCE so the next requests skip
it for a while instead of failing there first. All of it is per process and in memory:
losing it on restart only costs a few extra calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.clock import Clock
from service.novita import Cluster, NetworkStorage, NovitaClient, Product
from service.provisioning.memo import Memo
from service.provisioning.selection import Block
from service.provisioning.templates import TemplateCache
from service.settings import Settings

_CPU = "cpu"  # the key of CPU products among the per-billing-mode GPU product lists


class CatalogueCache:
    def __init__(self, novita: NovitaClient, clock: Clock, ttl: float) -> None:
        self._novita = novita
        self._products: Memo[tuple[Product, ...]] = Memo(clock, ttl)
        self._clusters: Memo[tuple[Cluster, ...]] = Memo(clock, ttl)
        self._storages: Memo[tuple[NetworkStorage, ...]] = Memo(clock, ttl)

    async def products(self, billing_mode: str) -> tuple[Product, ...]:
        """Every product offering `billing_mode`, with prices and availability for it."""
        return await self._products.get(
            billing_mode, lambda: self._novita.list_products(billing_method=billing_mode)
        )

    async def cpu_products(self) -> tuple[Product, ...]:
        """CPU products (`/cpu/products`), priced per instance-hour, on demand."""
        return await self._products.get(_CPU, self._novita.list_cpu_products)

    async def network_storages(self) -> tuple[NetworkStorage, ...]:
        return await self._storages.get("", self._novita.list_network_storages)

    async def clusters(self) -> tuple[Cluster, ...]:
        return await self._clusters.get("", self._novita.list_clusters)


class CapacityBlocks:
    """Region x product pairs to skip until their block expires."""

    def __init__(self, clock: Clock, ttl: float) -> None:
        self._clock = clock
        self._ttl = ttl
        self._until: dict[Block, float] = {}

    def block(self, region: str, product_id: str) -> None:
        self._until[(region, product_id)] = self._clock.monotonic() + self._ttl

    def active(self) -> frozenset[Block]:
        now = self._clock.monotonic()
        for key in [key for key, until in self._until.items() if until <= now]:
            del self._until[key]
        return frozenset(self._until)


@dataclass(frozen=True, slots=True)
class ProvisioningCaches:
    """One set per process, shared by the provisioner and request-time checks (validation,
    dry runs), so both see the same catalogue, templates and capacity blocks."""

    catalogue: CatalogueCache
    templates: TemplateCache
    blocks: CapacityBlocks

    @classmethod
    def create(cls, novita: NovitaClient, clock: Clock, settings: Settings) -> ProvisioningCaches:
        return cls(
            catalogue=CatalogueCache(novita, clock, settings.catalogue_cache_seconds),
            templates=TemplateCache(novita, clock, settings.template_cache_seconds),
            blocks=CapacityBlocks(clock, settings.capacity_block_seconds),
        )
