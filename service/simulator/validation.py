"""Validation of `POST /gpu/instance/create` bodies against the documented ranges (§5.5).

Unknown fields are ignored, never rejected. Each failure names its field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.simulator.errors import invalid
from service.simulator.machine import PortSpec

RESERVED_PORTS = range(2222, 2225)
MAX_PORTS_AND_TOOLS = 15
BILLING_MODES = ("onDemand", "monthly", "spot")


@dataclass(frozen=True)
class CreateRequest:
    name: str
    product_id: str
    kind: str
    gpu_num: int
    rootfs_size: int
    image_url: str
    image_auth: str
    image_auth_id: str
    ports: list[PortSpec]
    envs: list[dict[str, str]]
    tools: list[PortSpec]
    tool_names: list[str]
    command: str
    entrypoint: str
    cluster_id: str
    network_id: str
    network_storages: list[tuple[str, str]]
    month: int
    billing_mode: str
    auto_renew: bool
    auto_renew_month: int
    min_cuda_version: str
    template_id: str = ""


def _string(body: dict[str, Any], key: str, *, low: int = 0, high: int, required: bool = False,
            ) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(key, "is required")
        return ""
    if not isinstance(value, str):
        raise invalid(key, "must be a string")
    if not low <= len(value) <= high:
        raise invalid(key, f"length must be between {low} and {high}")
    return value


def _int(body: dict[str, Any], key: str, *, required: bool = False, default: int = 0) -> int:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(key, "is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(key, "must be an integer")
    return value


def parse_ports(text: str, key: str = "ports") -> list[PortSpec]:
    """Parse `"80/http, 3306/tcp"`; empty items are skipped."""
    specs: list[PortSpec] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        number, sep, kind = item.partition("/")
        kind = kind.strip().lower()
        if not sep or kind not in ("http", "tcp"):
            raise invalid(key, f"{item!r} must look like 8888/http or 22/tcp")
        specs.append(_port(number.strip(), kind, key))
    return specs


def _port(number: object, kind: str, key: str) -> PortSpec:
    if isinstance(number, str) and number.isdigit():
        port = int(number)
    elif isinstance(number, int) and not isinstance(number, bool):
        port = number
    else:
        raise invalid(key, f"port {number!r} is not a number")
    if not 1 <= port <= 65535:
        raise invalid(key, f"port {port} must be between 1 and 65535")
    if port in RESERVED_PORTS:
        raise invalid(key, f"port {port} is reserved (2222-2224)")
    return PortSpec(port, kind)


def _envs(body: dict[str, Any], limit: int) -> list[dict[str, str]]:
    value = body.get("envs")
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("envs", "must be a list of {key, value}")
    if len(value) > limit:
        raise invalid("envs", f"at most {limit} entries")
    envs = []
    for index, entry in enumerate(value):
        where = f"envs[{index}]"
        if not isinstance(entry, dict):
            raise invalid(where, "must be an object {key, value}")
        key = _string(entry, "key", high=511)
        val = _string(entry, "value", high=4095)
        envs.append({"key": key, "value": val})
    return envs


def _tools(body: dict[str, Any]) -> tuple[list[PortSpec], list[str]]:
    value = body.get("tools")
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise invalid("tools", "must be a list of {name, port, type}")
    specs, names = [], []
    for index, entry in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(entry, dict):
            raise invalid(where, "must be an object {name, port, type}")
        kind = entry.get("type", "http")
        if kind not in ("http", "tcp"):
            raise invalid(f"{where}.type", "must be http or tcp")
        specs.append(_port(entry.get("port"), kind, f"{where}.port"))
        names.append(str(entry.get("name", "")))
    return specs, names


def _network_storages(body: dict[str, Any]) -> list[tuple[str, str]]:
    value = body.get("networkStorages")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 30:
        raise invalid("networkStorages", "must be a list of at most 30 {Id, mountPoint}")
    mounts = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise invalid(f"networkStorages[{index}]", "must be an object {Id, mountPoint}")
        storage_id = _string(entry, "Id", low=1, high=255, required=True)
        mount = _string(entry, "mountPoint", high=4095) or "/network"
        mounts.append((storage_id, mount))
    return mounts


def parse_create(body: Any) -> CreateRequest:
    """Check a create body; raise `SimError` (400 VALIDATOR_PARAM) naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    kind = body.get("kind", "gpu")
    if kind not in ("gpu", "cpu"):
        raise invalid("kind", "must be gpu or cpu")
    name = _string(body, "name", high=255)
    product_id = _string(body, "productId", low=1, high=255, required=True)
    if kind == "gpu":
        gpu_num = _int(body, "gpuNum", required=True)
        if not 1 <= gpu_num <= 8:
            raise invalid("gpuNum", "must be between 1 and 8")
        rootfs = _int(body, "rootfsSize", required=True)
    else:
        gpu_num = 0
        rootfs = _int(body, "rootfsSize", default=10)
    if rootfs < 0 or rootfs > 6144:
        raise invalid("rootfsSize", "must be between 10 and 6144")
    rootfs = max(rootfs, 10)  # documented: smaller sizes are raised to 10 GB
    image_url = _string(body, "imageUrl", low=1, high=500, required=True)
    image_auth = _string(body, "imageAuth", high=10239)
    image_auth_id = _string(body, "imageAuthId", high=255)
    ports_text = body.get("ports")
    if ports_text is not None and not isinstance(ports_text, str):
        raise invalid("ports", 'must be a string like "80/http, 22/tcp"')
    ports = parse_ports(ports_text or "")
    tools, tool_names = _tools(body)
    if len(ports) + len(tools) > MAX_PORTS_AND_TOOLS:
        raise invalid("ports", f"ports and tools together must not exceed {MAX_PORTS_AND_TOOLS}")
    seen: set[int] = set()
    for spec in ports:
        if spec.port in seen:
            raise invalid("ports", f"port {spec.port} is listed twice")
        seen.add(spec.port)
    envs = _envs(body, 30 if kind == "cpu" else 100)
    month = _int(body, "month")
    if month < 0:
        raise invalid("month", "must be >= 0")
    billing = body.get("billingMode") or "onDemand"
    if billing not in BILLING_MODES:
        raise invalid("billingMode", "must be onDemand, monthly or spot")
    if month > 0:
        billing = "monthly"
    auto_renew = body.get("autoRenew", False)
    if not isinstance(auto_renew, bool):
        raise invalid("autoRenew", "must be a boolean")
    auto_renew_month = _int(body, "autoRenewMonth")
    if auto_renew_month and not 1 <= auto_renew_month <= 12:
        raise invalid("autoRenewMonth", "must be between 1 and 12")
    template_id = body.get("templateId")
    return CreateRequest(
        name=name,
        product_id=product_id,
        kind=kind,
        gpu_num=gpu_num,
        rootfs_size=rootfs,
        image_url=image_url,
        image_auth=image_auth,
        image_auth_id=image_auth_id,
        ports=ports,
        envs=envs,
        tools=tools,
        tool_names=tool_names,
        command=_string(body, "command", high=2047),
        entrypoint=_string(body, "entrypoint", high=2047),
        cluster_id=_string(body, "clusterId", high=255),
        network_id=_string(body, "networkId", high=255),
        network_storages=_network_storages(body),
        month=month,
        billing_mode=billing,
        auto_renew=auto_renew,
        auto_renew_month=auto_renew_month,
        min_cuda_version=_string(body, "minCudaVersion", high=32),
        template_id=str(template_id) if isinstance(template_id, str | int) else "",
    )
