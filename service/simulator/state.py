"""The simulator's books: instances, capacity and the operations the API performs on them.

Everything here is synchronous and does no I/O; each operation returns the changes it
caused, and the `Simulator` turns those into pushed events and endpoint listeners.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable

from service.simulator import catalogue
from service.simulator.capacity import Capacity
from service.simulator.config import SimulatorConfig
from service.simulator.errors import SimError, conflict, insufficient, invalid, not_found
from service.simulator.machine import (
    DELETING_STATUSES,
    RELEASED_STATUSES,
    STATUSES,
    Change,
    Machine,
    PortSpec,
    SimInstance,
)
from service.simulator.validation import CreateRequest

_PASSWORD_ALPHABET = string.ascii_letters + string.digits


class SimState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.capacity = Capacity(config.capacity_on_demand, config.capacity_spot)
        self.machine = Machine(config.dwell_for, config.removed_linger, config.app_startup_delay)
        self.instances: dict[str, SimInstance] = {}
        self.registry_auths = list(catalogue.REGISTRY_AUTHS)
        self._random = random.Random(config.seed)
        self._seq = 0

    def reset(self) -> None:
        self.instances.clear()
        self.capacity.reset()
        self.registry_auths = list(catalogue.REGISTRY_AUTHS)
        self._random = random.Random(self.config.seed)
        self._seq = 0

    @property
    def sequence(self) -> int:
        """How many instances this world has created (the last `seq` handed out)."""
        return self._seq

    def resume(self, sequence: int, seed: int) -> None:
        """Continue a saved world (`service.simulator.persistence`): numbering goes on from
        `sequence`; randomness (ids, passwords, placement) restarts from `seed`."""
        self._seq = sequence
        self._random = random.Random(seed)

    # -- lookups ------------------------------------------------------------------------

    def get(self, instance_id: str) -> SimInstance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise not_found(f"instance {instance_id}")
        return inst

    def next_due(self) -> float | None:
        times = [t for inst in self.instances.values() if (t := inst.due_at()) is not None]
        return min(times) if times else None

    # -- create -------------------------------------------------------------------------

    def create(
        self, req: CreateRequest, mono: float, unix: float
    ) -> tuple[SimInstance, list[Change]]:
        if req.kind == "cpu":
            return self._create_cpu(req, mono, unix)
        product = catalogue.product_by_id(req.product_id)
        if product is None:
            if catalogue.cpu_product_by_id(req.product_id) is not None:
                raise invalid("productId", "is a CPU product; use kind=cpu")
            raise SimError(400, "RESOURCE_NOT_FOUND", f"product {req.product_id} not found",
                           {"field": "productId"})
        if req.gpu_num > product.max_gpus:
            raise SimError(400, "CREATE_GPU_NUM_LIMIT",
                           f"gpuNum {req.gpu_num} exceeds {product.max_gpus} for this product")
        if req.rootfs_size > product.max_rootfs:
            raise invalid("rootfsSize", f"must be at most {product.max_rootfs} for this product")
        if req.billing_mode not in product.billing_methods:
            raise SimError(400, "UNSUPPORTED_BILLING_MODE",
                           f"billing mode {req.billing_mode} is not supported by this product")
        if req.min_cuda_version and _version(req.min_cuda_version) > _version(product.cuda_version):
            raise SimError(400, "CUDA_VERSION_INCOMPATIBLE",
                           f"product supports CUDA up to {product.cuda_version}")
        spot = req.billing_mode == "spot"
        wanted = _storage_cluster(req)
        cluster_id = self._place(product.id, product.cluster_ids, wanted, spot)
        price = product.spot_price if spot and product.spot_price is not None else product.price
        return self._new_instance(
            req, product.id, product.name, cluster_id, spot, price,
            cpu_num=product.cpu_per_gpu * req.gpu_num,
            memory=product.memory_per_gpu * req.gpu_num,
            local_storage=product.disk_per_gpu * req.gpu_num,
            mono=mono, unix=unix,
        )

    def _create_cpu(self, req: CreateRequest, mono: float, unix: float,
                    ) -> tuple[SimInstance, list[Change]]:
        cpu = catalogue.cpu_product_by_id(req.product_id)
        if cpu is None:
            raise SimError(400, "RESOURCE_NOT_FOUND", f"CPU product {req.product_id} not found",
                           {"field": "productId"})
        if req.billing_mode == "spot":
            raise SimError(400, "UNSUPPORTED_BILLING_MODE", "CPU instances cannot be spot")
        cluster_id = self._place(cpu.id, cpu.cluster_ids, _storage_cluster(req), False)
        return self._new_instance(
            req, cpu.id, cpu.name, cluster_id, False, cpu.price,
            cpu_num=cpu.cpu_num, memory=cpu.memory_size, local_storage=cpu.local_volume_size,
            mono=mono, unix=unix,
        )

    def _place(self, product_id: str, cluster_ids: Iterable[str], wanted: str, spot: bool) -> str:
        """Choose the cluster and take a slot there, or raise INSUFFICIENT_RESOURCE."""
        cluster_ids = tuple(cluster_ids)
        if wanted:
            if catalogue.cluster_by_id(wanted) is None:
                raise invalid("clusterId", f"unknown cluster {wanted}")
            if wanted not in cluster_ids:
                raise insufficient(f"product {product_id} is not available in cluster {wanted}")
            candidates: tuple[str, ...] = (wanted,)
        else:
            candidates = tuple(
                c for c in cluster_ids if self.capacity.free(product_id, c, spot) > 0
            )
            if candidates:
                # Novita picks a cluster for you when clusterId is empty (§5.5).
                candidates = (self._random.choice(candidates),)
        for cluster_id in candidates:
            if self.capacity.take(product_id, cluster_id, spot):
                return cluster_id
        if spot:
            raise insufficient("No available Spot instances in this region. Try On-Demand instead.")
        raise insufficient()

    def _new_instance(
        self, req: CreateRequest, product_id: str, product_name: str, cluster_id: str,
        spot: bool, price: int, *, cpu_num: int, memory: int, local_storage: int,
        mono: float, unix: float,
    ) -> tuple[SimInstance, list[Change]]:
        cluster = catalogue.cluster_by_id(cluster_id)
        assert cluster is not None
        self._seq += 1
        ports = list(req.ports)
        known = {p.port for p in ports}
        ports += [PortSpec(t.port, t.type) for t in req.tools if t.port not in known]
        inst = SimInstance(
            id=self._new_id(),
            seq=self._seq,
            name=req.name,
            kind=req.kind,
            product_id=product_id,
            product_name=product_name,
            cluster_id=cluster_id,
            cluster_name=cluster.name,
            gpu_num=req.gpu_num,
            cpu_num=cpu_num,
            memory=memory,
            rootfs_size=req.rootfs_size,
            image_url=req.image_url,
            billing_mode=req.billing_mode,
            spot=spot,
            price=price,
            created_at=unix,
            image_auth_id=req.image_auth_id,
            command=req.command,
            entrypoint=req.entrypoint,
            ports=ports,
            envs=req.envs,
            tools=req.tool_names,
            month=req.month,
            auto_renew=req.auto_renew,
            network_id=req.network_id,
            network_storages=req.network_storages,
            local_storage=local_storage,
            template_id=req.template_id,
            ssh_password="".join(self._random.choices(_PASSWORD_ALPHABET, k=16)),
            holds_capacity=True,
        )
        self.instances[inst.id] = inst
        return inst, self.machine.begin(inst, "pending", mono, unix)

    def new_registry_auth_id(self) -> str:
        return "".join(self._random.choices(string.ascii_lowercase + string.digits, k=32))

    def _new_id(self) -> str:
        while True:
            candidate = f"{self._random.getrandbits(64):016x}"
            if candidate not in self.instances:
                return candidate

    # -- lifecycle operations -----------------------------------------------------------

    def start(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        if inst.status != "exited":
            raise conflict()
        if not self.capacity.take(inst.product_id, inst.cluster_id, inst.spot):
            raise SimError(400, "INSUFFICIENT_RESOURCE", "start instance error: insufficient "
                           "resource; the instance can be migrated to another node")
        inst.holds_capacity = True
        return self.machine.begin(inst, "toStart", mono, unix)

    def stop(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        if inst.status != "running":
            raise conflict()
        return self.machine.begin(inst, "toStop", mono, unix)

    def restart(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        if inst.status != "running":
            raise conflict()
        return self.machine.begin(inst, "toRestart", mono, unix)

    def migrate(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        if inst.status != "exited":
            raise conflict()
        if not self.capacity.take(inst.product_id, inst.cluster_id, inst.spot):
            raise SimError(400, "MIGRATE_INSUFFICIENT_RESOURCE", "no node available to migrate to")
        inst.holds_capacity = True
        return self.machine.begin(inst, "migrating", mono, unix)

    def delete(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        if inst.status in DELETING_STATUSES:
            return []  # already on its way out; deleting again changes nothing
        return self.machine.begin(inst, "toRemove", mono, unix)

    def reclaim(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        if not inst.spot:
            raise SimError(400, "CONFLICT", "only spot instances can be reclaimed")
        if inst.status != "running" or inst.spot_status not in ("", "running"):
            raise conflict()
        return self.machine.begin_reclaim(inst, mono, unix)

    def jump(
        self, inst: SimInstance, status: str, mono: float, unix: float, *,
        hold: bool = False, status_error: tuple[str, str] | None = None,
        spot_status: str | None = None,
    ) -> list[Change]:
        """Test hook: put `inst` in any status now; it then follows its natural path unless held."""
        if status not in STATUSES:
            raise invalid("status", f"unknown status {status!r}")
        changes = self.machine.begin(inst, status, mono, unix, () if hold else None)
        if status_error is not None:
            inst.status_error = status_error if any(status_error) else None
        if spot_status is not None:
            inst.spot_status = spot_status
        return changes

    def random_reclaims(self, rate: float, mono: float, unix: float) -> list[Change]:
        changes: list[Change] = []
        for inst in list(self.instances.values()):
            if inst.spot and inst.status == "running" and inst.spot_status in ("", "running"):
                if self._random.random() < rate:
                    changes += self.machine.begin_reclaim(inst, mono, unix)
        return changes

    # -- time -------------------------------------------------------------------------------

    def advance(self, mono: float, unix: float) -> list[Change]:
        changes: list[Change] = []
        for inst in list(self.instances.values()):
            changes += self.machine.advance(inst, mono, unix)
        for change in changes:
            if change.field == "gone":
                self.instances.pop(change.instance_id, None)
        return changes

    def sync_capacity(self, inst: SimInstance) -> None:
        """Keep the pools in step with the status: exited and removed hold no slot."""
        should_hold = inst.status not in RELEASED_STATUSES
        if should_hold and not inst.holds_capacity:
            self.capacity.force_take(inst.product_id, inst.cluster_id, inst.spot)
        elif inst.holds_capacity and not should_hold:
            self.capacity.release(inst.product_id, inst.cluster_id, inst.spot)
        inst.holds_capacity = should_hold


def _storage_cluster(req: CreateRequest) -> str:
    """The cluster the instance must be placed in: the request's, which must hold every
    network storage it mounts (else the storages' own cluster)."""
    wanted = req.cluster_id
    for storage_id, _ in req.network_storages:
        storage = catalogue.network_storage_by_id(storage_id)
        if storage is None:
            raise SimError(400, "NETWORK_STORAGE_NOT_FOUND",
                           f"network storage {storage_id} not found", {"field": "networkStorages"})
        if wanted and storage.cluster_id != wanted:
            raise SimError(400, "NETWORK_STORAGE_UNAVAILABLE",
                           f"network storage {storage_id} is in cluster {storage.cluster_id}, "
                           f"not {wanted}")
        wanted = storage.cluster_id
    return wanted


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise invalid("minCudaVersion", "must look like 12.4") from None
