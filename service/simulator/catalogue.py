"""The simulator's seeded catalogue: clusters, GPU and CPU products, templates, registry auths.

Prices are integers in 1/100,000 USD per GPU per hour (docs/novita-facts.md): 35000 = $0.35.
`monthlyPrice[].price` is per GPU per month for a term of `month` months. Several products
share a name with different ids, prices and regions, so "cheapest across regions" means
something. Cluster ids use both styles seen in the wild (§5.1): slugs and small numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cluster:
    id: str
    name: str  # the region code, e.g. "AS-SGP-02"
    city: str
    support_network_storage: bool = True
    support_instance_network: bool = False

    @property
    def region_display(self) -> str:
        return f"{self.name} ({self.city})"


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    cpu_per_gpu: int
    memory_per_gpu: int
    disk_per_gpu: int
    price: int
    spot_price: int | None  # None: no spot billing
    monthly_price: int | None  # per GPU per month for a 1-month term; None: no monthly billing
    cluster_ids: tuple[str, ...]
    max_gpus: int = 8
    min_rootfs: int = 10
    max_rootfs: int = 500
    max_local_storage: int = 0
    cuda_version: str = "12.4"

    @property
    def billing_methods(self) -> tuple[str, ...]:
        methods = ["onDemand"]
        if self.monthly_price is not None:
            methods.append("monthly")
        if self.spot_price is not None:
            methods.append("spot")
        return tuple(methods)

    def monthly_prices(self) -> list[dict[str, int]]:
        if self.monthly_price is None:
            return []
        # Longer terms are cheaper per month, as on the console.
        discounts = ((1, 100), (3, 95), (6, 90), (12, 85))
        return [
            {"price": self.monthly_price * pct // 100, "month": month} for month, pct in discounts
        ]


@dataclass(frozen=True)
class CpuProduct:
    id: str
    name: str
    cpu_num: int
    memory_size: int
    rootfs_size: int
    local_volume_size: int
    price: int
    cluster_ids: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    image: str
    readme: str
    channel: str
    http_ports: tuple[int, ...]
    tcp_ports: tuple[int, ...]
    envs: tuple[tuple[str, str], ...]
    tools: tuple[tuple[str, str, int, str], ...] = ()  # name, describe, port, type
    start_command: str = ""
    entrypoint: str = ""
    min_cuda_version: str = ""
    rootfs_size: int = 60
    image_auth: str = ""
    created_at: int = 1713162260
    recommend_cards: tuple[tuple[str, int], ...] = ()
    user: str = "novita"
    volumes: tuple[tuple[str, int, str], ...] = field(default=(("local", 30, "/workspace"),))

    def to_wire(self, *, listing: bool = False) -> dict[str, Any]:
        ports = []
        if self.http_ports:
            ports.append({"type": "http", "ports": list(self.http_ports)})
        if self.tcp_ports:
            ports.append({"type": "tcp", "ports": list(self.tcp_ports)})
        wire: dict[str, Any] = {
            "Id": self.id,
            "name": self.name,
            "readme": self.readme,
            "type": "instance",
            "channel": self.channel,
            "image": self.image,
            "imageAuth": self.image_auth,
            "startCommand": self.start_command,
            "entrypoint": self.entrypoint,
            "minCudaVersion": self.min_cuda_version,
            "rootfsSize": self.rootfs_size,
            "ports": ports,
            "envs": [{"key": key, "value": value} for key, value in self.envs],
            "tools": [
                {"name": name, "describe": describe, "port": port, "type": kind}
                for name, describe, port, kind in self.tools
            ],
            "createdAt": str(self.created_at),
            "recommendCards": [
                {"gpuSpecId": spec, "cardNum": num} for spec, num in self.recommend_cards
            ],
        }
        if listing:
            wire["createTime"] = str(self.created_at)
            wire["user"] = self.user
            wire["volumes"] = [
                {"type": kind, "size": size, "mountPath": path}
                for kind, size, path in self.volumes
            ]
        return wire


@dataclass(frozen=True)
class NetworkStorage:
    """A network volume; mounted at create (`networkStorages: [{Id, mountPoint}]`) in its
    cluster."""

    storage_id: str
    name: str
    size: int  # GB
    cluster_id: str
    price: str = "100"  # 1/100,000 USD, a string as Novita sends it

    def to_wire(self) -> dict[str, Any]:
        cluster = cluster_by_id(self.cluster_id)
        return {
            "storageId": self.storage_id,
            "storageName": self.name,
            "storageSize": self.size,
            "clusterId": self.cluster_id,
            "clusterName": cluster.name if cluster is not None else "",
            "price": self.price,
        }


@dataclass(frozen=True)
class RegistryAuth:
    id: str
    name: str
    username: str
    password: str

    def to_wire(self) -> dict[str, str]:
        # Plain-text password, as the docs show and `sontl` relies on (§5.4).
        return {
            "id": self.id,
            "name": self.name,
            "username": self.username,
            "password": self.password,
        }


CLUSTERS: tuple[Cluster, ...] = (
    Cluster("as-sgp-2", "AS-SGP-02", "Singapore", support_instance_network=True),
    Cluster("cn-hongkong-1", "CN-HK-01", "Hong Kong"),
    Cluster("as-in-1", "AS-IN-01", "India"),
    Cluster("us-ca-06", "US-CA-06", "California", support_instance_network=True),
    Cluster("eu-de-01", "EU-DE-01", "Germany"),
    Cluster("5", "US-01", "Dallas", support_network_storage=False),
    Cluster("12", "OC-AU-01", "Sydney", support_network_storage=False),
)

PRODUCTS: tuple[Product, ...] = (
    Product("4090.16c62g", "RTX 4090 24GB", 16, 62, 200, 35000, 17500, 20000000, ("as-sgp-2",)),
    Product(
        "4090.16c96g.v2", "RTX 4090 24GB", 16, 96, 200, 38000, 19000, 22000000, ("cn-hongkong-1",)
    ),
    Product("4090.18c.60g", "RTX 4090 24GB", 18, 60, 150, 29000, 14500, None, ("as-in-1",)),
    Product(
        "4090.16c62g.us", "RTX 4090 24GB", 16, 62, 200, 34000, 17000, 19500000, ("us-ca-06", "5")
    ),
    Product(
        "3090.16c92g", "RTX 3090 24GB", 16, 92, 150, 21000, 10500, 12000000,
        ("as-sgp-2", "cn-hongkong-1"), cuda_version="12.2",
    ),
    Product(
        "3090.8c46g.eu", "RTX 3090 24GB", 8, 46, 100, 19000, None, 11000000, ("eu-de-01",),
        max_rootfs=300,  # a newer driver than its Asian namesake: CUDA 12.4
    ),
    Product(
        "a100.sxm4.80g", "A100 SXM4 80GB", 16, 120, 400, 139000, 89000, 80000000,
        ("us-ca-06", "eu-de-01"), max_rootfs=2000,
    ),
    Product(
        "a100.sxm4.80g.sg", "A100 SXM4 80GB", 16, 120, 400, 145000, None, 84000000,
        ("as-sgp-2",), max_rootfs=2000,
    ),
    Product(
        "h100.sxm.80g", "H100 SXM 80GB", 20, 240, 800, 259000, 160000, 150000000,
        ("us-ca-06", "5"), max_rootfs=6144, cuda_version="12.8",
    ),
    Product(
        "h100.sxm.80g.in", "H100 SXM 80GB", 20, 240, 800, 239000, None, 140000000,
        ("as-in-1",), max_rootfs=6144, cuda_version="12.8",
    ),
    Product(
        "l40s.16c.124g", "L40S 48GB", 16, 124, 300, 86000, 49000, 50000000,
        ("eu-de-01", "cn-hongkong-1"), max_rootfs=1000,
    ),
    Product("l40s.16c.124g.au", "L40S 48GB", 16, 124, 300, 89000, 51000, None, ("12",)),
    Product(
        "26", "RTX A6000 48GB", 12, 90, 200, 59000, 33000, 34000000, ("5",), max_gpus=4,
        cuda_version="12.2",
    ),
)

CPU_PRODUCTS: tuple[CpuProduct, ...] = (
    CpuProduct("cpu.4c16g", "CPU 4 vCPU 16GB", 4, 16, 30, 50, 4000, ("as-sgp-2", "us-ca-06")),
    CpuProduct("cpu.16c64g", "CPU 16 vCPU 64GB", 16, 64, 50, 200, 15000, ("eu-de-01",)),
)

NETWORK_STORAGES: tuple[NetworkStorage, ...] = (
    NetworkStorage("3f6c2a1e-8d4b-4c7a-9e2f-5b1d0a7c6e31", "datasets-sgp", 500, "as-sgp-2"),
    NetworkStorage("a9e1d4c2-6b3f-4f8e-8a1d-2c7b5e9f0d14", "checkpoints-de", 200, "eu-de-01"),
)

REGISTRY_AUTHS: tuple[RegistryAuth, ...] = (
    RegistryAuth("k3v9q2m7x1c8b4n6z0a5s2d7f9g1h3j5", "ghcr-acme", "acme-bot", "ghp_simulated"),
    RegistryAuth("p8w2e6r4t1y9u3i7o5l0k2j4h6g8f1d3", "dockerhub-ml", "mlteam", "dckr_simulated"),
)

TEMPLATES: tuple[Template, ...] = (
    Template(
        id="212",
        name="PyTorch 2.4 + Jupyter",
        image="pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
        readme="PyTorch 2.4 with CUDA 12.4. JupyterLab listens on 8888; SSH on 22.",
        channel="official",
        http_ports=(8888,),
        tcp_ports=(22,),
        envs=(("JUPYTER_TOKEN", "novita"), ("PYTHONUNBUFFERED", "1"), ("HF_HOME", "/workspace/hf")),
        tools=(("Jupyter", "JupyterLab", 8888, "http"),),
        start_command="jupyter lab --ip=0.0.0.0 --port=8888 --allow-root",
        min_cuda_version="12.4",
        rootfs_size=60,
        recommend_cards=(("4090.16c62g", 1), ("a100.sxm4.80g", 1)),
    ),
    Template(
        id="215",
        name="ComfyUI",
        image="ghcr.io/ai-dock/comfyui:latest-cuda",
        readme="ComfyUI web UI on 8188.",
        channel="official",
        http_ports=(8188,),
        tcp_ports=(),
        envs=(("COMFYUI_ARGS", "--listen 0.0.0.0 --port 8188"),),
        rootfs_size=80,
        recommend_cards=(("4090.16c62g", 1),),
        created_at=1716940800,
    ),
    Template(
        id="318",
        name="vLLM OpenAI server",
        image="vllm/vllm-openai:v0.6.3",
        readme="OpenAI-compatible server on 8000; set MODEL.",
        channel="community",
        http_ports=(8000,),
        tcp_ports=(22,),
        envs=(("MODEL", "Qwen/Qwen2.5-7B-Instruct"), ("MAX_MODEL_LEN", "8192")),
        min_cuda_version="12.1",
        rootfs_size=100,
        recommend_cards=(("a100.sxm4.80g", 1),),
        created_at=1729641600,
        user="community-user",
    ),
    Template(
        id="420",
        name="acme trainer (private)",
        image="ghcr.io/acme/trainer:1.8",
        readme="Private training image; pulls with a registry auth.",
        channel="private",
        http_ports=(6006,),
        tcp_ports=(22,),
        envs=(("WANDB_MODE", "offline"),),
        image_auth=REGISTRY_AUTHS[0].id,
        rootfs_size=120,
        created_at=1735689600,
        user="acme",
    ),
)


def cluster_by_id(cluster_id: str) -> Cluster | None:
    return next((c for c in CLUSTERS if c.id == cluster_id), None)


def product_by_id(product_id: str) -> Product | None:
    return next((p for p in PRODUCTS if p.id == product_id), None)


def cpu_product_by_id(product_id: str) -> CpuProduct | None:
    return next((p for p in CPU_PRODUCTS if p.id == product_id), None)


def network_storage_by_id(storage_id: str) -> NetworkStorage | None:
    return next((n for n in NETWORK_STORAGES if n.storage_id == storage_id), None)


def template_by_id(template_id: str) -> Template | None:
    return next((t for t in TEMPLATES if t.id == template_id), None)


def gpu_types_in(cluster_id: str) -> list[str]:
    return sorted({p.name for p in PRODUCTS if cluster_id in p.cluster_ids})


def catalogue_markdown() -> str:
    """The product table for the README (also written to CATALOGUE.md)."""
    lines = [
        "| Product id | Name | vCPU/GPU | RAM/GPU (GB) | $/GPU-h | Spot $/GPU-h | Billing "
        "| Regions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in PRODUCTS:
        regions = ", ".join(
            c.region_display for cid in p.cluster_ids if (c := cluster_by_id(cid)) is not None
        )
        spot = f"{p.spot_price / 100000:.3f}" if p.spot_price is not None else "-"
        lines.append(
            f"| `{p.id}` | {p.name} | {p.cpu_per_gpu} | {p.memory_per_gpu} | "
            f"{p.price / 100000:.3f} | {spot} | {', '.join(p.billing_methods)} | {regions} |"
        )
    lines += ["", "| Cluster id | Name (region code) | Location |", "|---|---|---|"]
    lines += [f"| `{c.id}` | {c.name} | {c.city} |" for c in CLUSTERS]
    lines += ["", "| Template Id | Name | Image | Ports |", "|---|---|---|---|"]
    for t in TEMPLATES:
        ports = ", ".join([f"{p}/http" for p in t.http_ports] + [f"{p}/tcp" for p in t.tcp_ports])
        lines.append(f"| `{t.id}` | {t.name} | `{t.image}` | {ports} |")
    return "\n".join(lines) + "\n"
