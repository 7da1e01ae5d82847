"""Typed, frozen views of Novita's JSON, parsed at the client boundary.

Novita's wire format is loose (docs/novita-facts.md): numbers arrive as strings, `""` means
null, templates say `Id` where everything else says `id`, timestamps are Unix-second strings,
and prices are integers (or strings) in 1/100,000 USD. These models absorb all of that, ignore
fields they do not know, and never keep credentials: a registry auth drops its password, and
env values and `image_auth` are hidden from `repr`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)
from pydantic.alias_generators import to_camel

PRICE_UNITS_PER_USD = Decimal(100_000)
BillingMode = Literal["onDemand", "monthly", "spot"]


# -- coercions for Novita's loose scalars ---------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _to_decimal(value: Any) -> Decimal | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a number was expected, not a boolean")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _to_int(value: Any) -> int | None:
    number = _to_decimal(value)
    if number is None:
        return None
    if number != number.to_integral_value():
        raise ValueError(f"not a whole number: {value!r}")
    return int(number)


def _to_price(value: Any) -> Decimal | None:
    """1/100,000 USD (int or string) → Decimal USD; a zero price means "not offered"."""
    number = _to_decimal(value)
    if number is None or number <= 0:
        return None
    return number / PRICE_UNITS_PER_USD


def _to_datetime(value: Any) -> datetime | None:
    """Unix seconds (number or string) → aware UTC; `"0"`/`"-1"` mean "not set"."""
    value = _blank_to_none(value)
    if value is None or isinstance(value, datetime):
        return value
    try:
        seconds = _to_decimal(value)
    except ValueError:
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if seconds is None or seconds <= 0:
        return None
    if seconds > 100_000_000_000:  # milliseconds: no Unix-second time is that far away
        seconds /= 1000
    return datetime.fromtimestamp(float(seconds), tz=UTC)


def _to_tuple(value: Any) -> Any:
    value = _blank_to_none(value)
    return () if value is None else value


OptStr = Annotated[str | None, BeforeValidator(_blank_to_none)]
OptInt = Annotated[int | None, BeforeValidator(_to_int)]
OptDecimal = Annotated[Decimal | None, BeforeValidator(_to_decimal)]
Price = Annotated[Decimal | None, BeforeValidator(_to_price)]
Timestamp = Annotated[datetime | None, BeforeValidator(_to_datetime)]
Flag = Annotated[bool, BeforeValidator(lambda v: False if _blank_to_none(v) is None else v)]


class NovitaModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )


# -- shared pieces ---------------------------------------------------------------------------


class EnvVar(NovitaModel):
    key: str
    # Env values often carry tokens; keep them out of reprs and therefore out of logs.
    value: Annotated[str, BeforeValidator(lambda v: "" if v is None else str(v))] = Field(
        default="", repr=False
    )


class PortSpec(NovitaModel):
    port: int
    type: str = "http"

    def render(self) -> str:
        return f"{self.port}/{self.type}"


# -- catalogue ---------------------------------------------------------------------------


class Cluster(NovitaModel):
    id: str
    name: str = ""
    available_gpu_types: tuple[str, ...] = Field(
        default=(), validation_alias=AliasChoices("availableGpuType", "availableGpuTypes")
    )
    support_network_storage: Flag = False
    support_instance_network: Flag = False
    region: OptStr = None

    @field_validator("available_gpu_types", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _to_tuple(value)


# Keys of a region given as an object, e.g. {"id": "as-sgp-2", "name": "AS-SGP-02"}.
_REGION_KEYS = ("id", "Id", "clusterId", "code", "name", "clusterName", "region")


class MonthlyPrice(NovitaModel):
    month: int
    price: Price = None


class Product(NovitaModel):
    id: str
    name: str = ""
    cpu_per_gpu: OptInt = None
    memory_per_gpu: OptInt = None
    disk_per_gpu: OptInt = None
    available_deploy: Flag = False
    min_rootfs: OptInt = Field(default=None, alias="minRootFS")
    max_rootfs: OptInt = Field(default=None, alias="maxRootFS")
    min_local_storage: OptInt = None
    max_local_storage: OptInt = None
    regions: tuple[str, ...] = ()
    price: Price = None
    spot_price: Price = None
    monthly_prices: tuple[MonthlyPrice, ...] = Field(default=(), alias="monthlyPrice")
    billing_methods: tuple[str, ...] = ()
    inventory_state: OptStr = None
    available_gpu_number: OptInt = None

    @field_validator("monthly_prices", "billing_methods", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _to_tuple(value)

    @field_validator("regions", mode="before")
    @classmethod
    def _region_names(cls, value: Any) -> Any:
        """Regions arrive as display names, bare codes, cluster ids or objects
        (docs/novita-facts.md): every string an item carries is kept."""
        value = _to_tuple(value)
        if isinstance(value, str):
            value = (value,)
        names: list[str] = []
        for item in value:
            if isinstance(item, Mapping):
                names += [
                    str(v).strip()
                    for key in _REGION_KEYS
                    if (v := item.get(key)) is not None and str(v).strip()
                ]
            elif isinstance(item, str | int) and not isinstance(item, bool):
                if str(item).strip():
                    names.append(str(item).strip())
            else:
                raise ValueError("a region must be a string or an object")
        return tuple(dict.fromkeys(names))

    @property
    def region_codes(self) -> tuple[str, ...]:
        """Region codes, display names reduced: "AS-SGP-02 (Singapore)" → "AS-SGP-02".

        Empty means the product is offered in every cluster.
        """
        return tuple(dict.fromkeys(region.split(" (", 1)[0].strip() for region in self.regions))

    def offered_in(self, cluster: Cluster) -> bool:
        """Whether one of the product's regions names this cluster (by code, id or display
        name, any case); a product listing no region is offered everywhere."""
        if not self.regions:
            return True
        names = {
            n.strip().upper() for n in (cluster.id, cluster.name, cluster.region or "") if n
        }
        return any(r.upper() in names for r in (*self.regions, *self.region_codes))

    def offers(self, billing_mode: str) -> bool:
        # An empty billingMethods list is taken as "on-demand only", Novita's default mode.
        return billing_mode in (self.billing_methods or ("onDemand",))

    def price_for(self, billing_mode: str) -> Decimal | None:
        """USD per GPU-hour (spot, onDemand) or per GPU-month for the shortest term (monthly).

        None when the product does not offer the mode or lists no price for it.
        """
        if not self.offers(billing_mode):
            return None
        if billing_mode == "onDemand":
            return self.price
        if billing_mode == "spot":
            return self.spot_price
        if billing_mode == "monthly":
            priced = [m for m in self.monthly_prices if m.price is not None]
            return min(priced, key=lambda m: m.month).price if priced else None
        return None


def cpu_product(raw: Any) -> Any:
    """A `/cpu/products` item as a `Product` (per instance, on demand, offered everywhere
    unless Novita says otherwise), so one selection serves GPU and CPU requests."""
    if not isinstance(raw, Mapping):
        return raw
    return {
        "id": raw.get("id"),
        "name": raw.get("name", ""),
        "availableDeploy": raw.get("availableDeploy"),
        "price": raw.get("price"),
        "cpuPerGpu": raw.get("cpuNum"),
        "memoryPerGpu": raw.get("memorySize"),
        "regions": raw.get("regions"),
        "billingMethods": raw.get("billingMethods") or ["onDemand"],
    }


class NetworkStorage(NovitaModel):
    """A network volume; an instance mounting it must be created in its cluster."""

    storage_id: str
    storage_name: str = ""
    storage_size: OptInt = None
    cluster_id: str
    cluster_name: OptStr = None


class Template(NovitaModel):
    id: str = Field(validation_alias=AliasChoices("Id", "id"))
    name: str = ""
    image: str = ""
    image_auth: OptStr = None  # a registry-auth id, despite the name
    ports: tuple[PortSpec, ...] = ()
    envs: tuple[EnvVar, ...] = ()
    rootfs_size: OptInt = None
    start_command: OptStr = None
    entrypoint: OptStr = None
    min_cuda_version: OptStr = None
    type: OptStr = None
    channel: OptStr = None
    created_at: Timestamp = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("ports", mode="before")
    @classmethod
    def _flatten_ports(cls, value: Any) -> Any:
        """Novita groups ports by type (`[{type, ports: [..]}]`); flatten to one per port."""
        flat: list[Any] = []
        for group in _to_tuple(value):
            if isinstance(group, Mapping) and "ports" in group:
                port_type = group.get("type") or "http"
                flat.extend({"port": port, "type": port_type} for port in group["ports"] or ())
            else:
                flat.append(group)
        return flat

    @field_validator("envs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _to_tuple(value)


class RegistryAuth(NovitaModel):
    """A container-registry credential's handle. The password is dropped on purpose."""

    id: str
    name: str = ""
    username: str = ""


# -- instances ---------------------------------------------------------------------------


class StatusError(NovitaModel):
    state: OptStr = None
    message: OptStr = None


class PortMapping(NovitaModel):
    port: int
    endpoint: OptStr = None
    type: str = "http"


def _status_error(value: Any) -> Any:
    if isinstance(value, Mapping) and not any(_blank_to_none(v) for v in value.values()):
        return None
    return _blank_to_none(value)


class Instance(NovitaModel):
    id: str = Field(validation_alias=AliasChoices("id", "Id"))
    name: str = ""
    cluster_id: OptStr = None
    cluster_name: OptStr = None
    status: str = ""
    status_error: Annotated[StatusError | None, BeforeValidator(_status_error)] = None
    port_mappings: tuple[PortMapping, ...] = ()
    gpu_num: OptInt = None
    cpu_num: OptInt = None
    memory: OptInt = None
    rootfs_size: OptInt = None
    product_id: OptStr = None
    product_name: OptStr = None
    image_url: OptStr = None
    image_auth_id: OptStr = None
    template_id: OptStr = None
    command: OptStr = None
    entrypoint: OptStr = None
    kind: OptStr = None
    envs: tuple[EnvVar, ...] = ()
    billing_mode: OptStr = None
    spot_status: OptStr = None
    spot_reclaim_time: Timestamp = None
    end_time: Timestamp = None
    created_at: Timestamp = None
    started_at: Timestamp = Field(
        default=None, validation_alias=AliasChoices("startedAt", "lastStartedAt")
    )
    stopped_at: Timestamp = Field(
        default=None, validation_alias=AliasChoices("stoppedAt", "lastStoppedAt")
    )

    @field_validator("port_mappings", "envs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _to_tuple(value)

    @field_validator("template_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class InstancePage(NovitaModel):
    instances: tuple[Instance, ...] = ()
    total: OptInt = None
    page_num: int = 1
    page_size: int = 10

    @field_validator("instances", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _to_tuple(value)


# -- requests ----------------------------------------------------------------------------


class Tool(NovitaModel):
    name: str
    port: str
    type: str = "http"

    @field_validator("port", mode="before")
    @classmethod
    def _port_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class NetworkStorageMount(NovitaModel):
    id: str = Field(alias="Id")
    mount_point: str = "/network"


def format_ports(ports: Iterable[PortSpec | tuple[int, str]]) -> str:
    """The create request's port string, e.g. "8888/http,22/tcp"."""
    specs = (p if isinstance(p, PortSpec) else PortSpec(port=p[0], type=p[1]) for p in ports)
    return ",".join(spec.render() for spec in specs)


class CreateInstanceRequest(NovitaModel):
    """Body of `POST /gpu/instance/create` (docs/novita-facts.md); Novita validates the rest."""

    name: str = ""
    product_id: str
    gpu_num: int | None = Field(default=1, ge=1, le=8)
    rootfs_size: int | None = Field(default=None, ge=0)
    image_url: str
    image_auth: SecretStr | None = None  # "user:password": a credential
    image_auth_id: str | None = None
    ports: str | None = None
    envs: tuple[EnvVar, ...] = ()
    tools: tuple[Tool, ...] = ()
    command: str | None = None
    entrypoint: str | None = None
    cluster_id: str | None = None
    network_storages: tuple[NetworkStorageMount, ...] = ()
    network_id: str | None = None
    kind: Literal["gpu", "cpu"] = "gpu"
    month: int | None = Field(default=None, ge=0)
    billing_mode: BillingMode | None = None
    auto_renew: bool | None = None
    auto_renew_month: int | None = Field(default=None, ge=1, le=12)
    min_cuda_version: str | None = None

    @field_validator("ports", mode="before")
    @classmethod
    def _render_ports(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return format_ports(value)
        return value

    def to_payload(self) -> dict[str, Any]:
        """camelCase JSON for Novita, credentials revealed, unset fields left out."""
        payload = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"image_auth"}
        )
        for key in ("envs", "tools", "networkStorages"):
            if not payload.get(key):
                payload.pop(key, None)
        if self.image_auth is not None:
            payload["imageAuth"] = self.image_auth.get_secret_value()
        return payload
