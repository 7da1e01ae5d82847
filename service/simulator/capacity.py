"""Free slots per product x cluster, with a separate pool for spot instances.

A slot is one instance (whatever its GPU count). Counts are *free* slots: `set(..., 1)`
means exactly one more instance fits, whatever already runs there.
"""

from __future__ import annotations

from service.simulator.catalogue import CPU_PRODUCTS, PRODUCTS

PoolKey = tuple[str, str, bool]  # product id, cluster id, spot


class Capacity:
    def __init__(self, on_demand: int, spot: int) -> None:
        self._on_demand = on_demand
        self._spot = spot
        self._free: dict[PoolKey, int] = {}
        self.reset()

    def reset(self) -> None:
        self._free.clear()
        for product in PRODUCTS:
            for cluster_id in product.cluster_ids:
                self._free[(product.id, cluster_id, False)] = self._on_demand
                if product.spot_price is not None:
                    self._free[(product.id, cluster_id, True)] = self._spot
        for cpu in CPU_PRODUCTS:
            for cluster_id in cpu.cluster_ids:
                self._free[(cpu.id, cluster_id, False)] = self._on_demand

    def free(self, product_id: str, cluster_id: str, spot: bool = False) -> int:
        return self._free.get((product_id, cluster_id, spot), 0)

    def take(self, product_id: str, cluster_id: str, spot: bool) -> bool:
        key = (product_id, cluster_id, spot)
        if self._free.get(key, 0) <= 0:
            return False
        self._free[key] -= 1
        return True

    def force_take(self, product_id: str, cluster_id: str, spot: bool) -> None:
        """Take a slot even if none is free (a test jumped an instance into a running state)."""
        key = (product_id, cluster_id, spot)
        self._free[key] = self._free.get(key, 0) - 1

    def release(self, product_id: str, cluster_id: str, spot: bool) -> None:
        key = (product_id, cluster_id, spot)
        self._free[key] = self._free.get(key, 0) + 1

    def set(self, cluster_id: str, count: int, product_id: str | None = None,
            spot: bool = False) -> int:
        """Set the free slots of a cluster (all its products, or one); returns pools changed."""
        if count < 0:
            raise ValueError("count must be >= 0")
        keys = [
            key for key in self._free
            if key[1] == cluster_id and key[2] == spot
            and (product_id is None or key[0] == product_id)
        ]
        for key in keys:
            self._free[key] = count
        return len(keys)

    def restore(self, pools: list[tuple[str, str, bool, int]]) -> None:
        """Set every pool's free slots from a saved world (product, cluster, spot, free)."""
        self.reset()
        for product_id, cluster_id, spot, free in pools:
            self._free[(product_id, cluster_id, spot)] = free

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {"productId": p, "clusterId": c, "spot": s, "free": n}
            for (p, c, s), n in sorted(self._free.items())
        ]
