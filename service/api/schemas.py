"""Request bodies of the REST API, validated with pydantic at the edge.

`CreateInstanceBody` also accepts what clients of the earlier Express service send
(`name, productName, templateId` as a string, `gpuNum, rootfsSize, region, webhookUrl,
billingMode`) and the Novita string form of ports (`"8888/http,22/tcp"`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from service.auth.roles import TEAM_NAME

RESERVED_PORTS = range(2222, 2225)
MAX_PORTS = 15
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")  # used with fullmatch
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _json_integer(value: Any) -> Any:
    """What the schema says, no more: a JSON number (not `true`, not `"5"`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    return value


JsonNumber = BeforeValidator(_json_integer)  # last in Annotated, so bounds stay in the schema

# RFC 3339 date-time (what `format: date-time` means), with ASCII digits and a zone.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
EARLIEST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(9999, 1, 1, tzinfo=UTC)


def _moment_text(value: Any) -> Any:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 time with a zone, e.g. 2026-01-01T12:00:00Z")
    return value


def _moment_in_range(value: datetime) -> datetime:
    try:
        moment = value.astimezone(UTC)  # "0001-01-01T00:00:00+14:00" overflows here
    except OverflowError:
        moment = None
    if moment is None or not EARLIEST_MOMENT <= moment < LATEST_MOMENT:
        raise ValueError("must be between 1970-01-01 and 9999-01-01")
    return moment


# A point in time from a client: RFC 3339 text with a zone, within 1970-9999, in UTC.
Moment = Annotated[datetime, BeforeValidator(_moment_text), AfterValidator(_moment_in_range)]


def _not_reserved(port: int) -> int:
    if port in RESERVED_PORTS:
        raise ValueError("ports 2222-2224 are reserved by Novita")
    return port


Port = Annotated[int, Field(ge=1, le=65535), JsonNumber, AfterValidator(_not_reserved)]


class PortSpec(_Body):
    port: Port
    type: Literal["http", "tcp"] = "http"


def _parse_port_string(value: Any) -> Any:
    """`"8888/http, 22/tcp"` → `[{"port": 8888, "type": "http"}, ...]` (Novita's form)."""
    if not isinstance(value, str):
        return value
    ports: list[dict[str, Any]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        number, _, kind = item.partition("/")
        digits = number.strip()
        if not (0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()):
            raise ValueError(f"{item!r} is not PORT/TYPE, e.g. 8888/http")
        ports.append({"port": int(number), "type": (kind.strip() or "http").lower()})
    return ports


def _unique_ports(ports: list[PortSpec]) -> list[PortSpec]:
    numbers = [spec.port for spec in ports]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise ValueError(f"port {duplicates[0]} is listed more than once")
    return ports


class EnvVar(_Body):
    key: str = Field(min_length=1, max_length=511, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = Field(max_length=4095)


class Readiness(_Body):
    """Which ports the readiness probe checks (default: every HTTP port) and the HTTP path."""

    ports: list[Port] | None = Field(default=None, max_length=MAX_PORTS)
    path: str = Field(default="/", max_length=1024, pattern=r"^/")


class AutoStop(_Body):
    idle_minutes: Annotated[int, Field(ge=1, le=10080), JsonNumber] = Field(alias="idleMinutes")
    action: Literal["stop", "delete"] = "stop"


class OnInterruption(_Body):
    """What the service does when Novita reclaims a spot instance (bounded retries)."""

    action: Literal["notify", "restart", "recreate"] = "notify"
    max_attempts: Annotated[int, Field(ge=1, le=100), JsonNumber] | None = Field(
        default=None, alias="maxAttempts"
    )
    max_minutes: Annotated[int, Field(ge=1, le=10080), JsonNumber] | None = Field(
        default=None, alias="maxMinutes"
    )


class UpdatePoliciesBody(_Body):
    """`PATCH /api/instances/{id}`: a field left out is kept; null clears it (the service
    defaults apply again)."""

    auto_stop: AutoStop | None = Field(default=None, alias="autoStop")
    on_interruption: OnInterruption | None = Field(default=None, alias="onInterruption")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            "must be 1-100 characters: letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key[:70]!r} must be 1-63 of letters, digits, . _ / -")
    return value


def _str_id(value: Any) -> Any:
    # The earlier service's clients send templateId as a string; numbers are fine too.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return value


_TEMPLATE_ID_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 64},
        {"type": "integer", "minimum": 0},
    ]
}
_LABELS_SCHEMA = {
    "type": "object",
    "maxProperties": 50,
    "propertyNames": {"pattern": f"^{LABEL_KEY.pattern}$"},
    "additionalProperties": {"type": "string", "maxLength": 255},
}


Region = Annotated[str, Field(min_length=1, max_length=64)]


def _given(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


# -- create options Novita takes as they are (kind, tools, network storages, ...) ----------


class Tool(_Body):
    """A tool Novita runs beside the image (e.g. Jupyter); its port counts toward 15."""

    name: str = Field(min_length=1, max_length=64)
    port: Port
    type: Literal["http", "tcp"] = "http"


class NetworkStorageMount(_Body):
    """A network volume to mount, by its id (Novita writes `Id`; `id` is accepted too)."""

    id: str = Field(
        validation_alias=AliasChoices("Id", "id"), serialization_alias="id",
        min_length=1, max_length=255,
    )
    mount_point: str = Field(
        default="/network", alias="mountPoint", min_length=1, max_length=4095, pattern=r"^/"
    )


class CreateInstanceBody(_Body):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={
            # The cross-field rules of `problems()`, for clients and tools reading the schema.
            "allOf": [
                # Given and not null: `"productName": null` counts as not given.
                {"anyOf": [_given("productName"), _given("productId")]},
                {"anyOf": [_given("templateId"), _given("imageUrl")]},
            ]
        },
    )

    # The pattern is documented, not enforced by pydantic: `_check_name` says it in words.
    name: Annotated[
        str, Field(json_schema_extra={"pattern": _NAME.pattern}), AfterValidator(_check_name)
    ]
    product_name: str | None = Field(
        default=None, alias="productName", min_length=1, max_length=255
    )
    product_id: str | None = Field(default=None, alias="productId", min_length=1, max_length=255)
    template_id: (
        Annotated[
            str,
            BeforeValidator(_str_id),
            Field(min_length=1, max_length=64),
            WithJsonSchema(_TEMPLATE_ID_SCHEMA),
        ]
        | None
    ) = Field(default=None, alias="templateId")
    image_url: str | None = Field(default=None, alias="imageUrl", min_length=1, max_length=500)
    image_auth_id: str | None = Field(
        default=None, alias="imageAuthId", min_length=1, max_length=255
    )
    gpu_num: Annotated[int, Field(ge=1, le=8), JsonNumber] = Field(default=1, alias="gpuNum")
    rootfs_size: Annotated[int, Field(ge=10, le=6144), JsonNumber] | None = Field(
        default=None, alias="rootfsSize"
    )
    billing_mode: Literal["spot", "onDemand", "monthly"] = Field(
        default="onDemand", alias="billingMode"
    )
    region: Region | None = None
    regions: list[Region] = Field(default_factory=list, max_length=32)
    ports: Annotated[
        list[PortSpec],
        BeforeValidator(_parse_port_string),
        AfterValidator(_unique_ports),
        Field(max_length=MAX_PORTS),
    ] = Field(default_factory=list)
    envs: list[EnvVar] = Field(default_factory=list, max_length=100)
    webhook_url: Annotated[
        str | None,
        Field(alias="webhookUrl", max_length=2048),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "maxLength": 2048, "pattern": _HTTP_URL.pattern},
                    {"type": "null"},
                ]
            }
        ),
    ] = None
    labels: Annotated[
        dict[str, Annotated[str, Field(max_length=255)]],
        AfterValidator(_check_labels),
        WithJsonSchema(_LABELS_SCHEMA),
    ] = Field(default_factory=dict, max_length=50)
    readiness: Readiness | None = None
    auto_stop: AutoStop | None = Field(default=None, alias="autoStop")
    on_interruption: OnInterruption | None = Field(default=None, alias="onInterruption")
    kind: Literal["gpu", "cpu"] = "gpu"
    tools: list[Tool] = Field(default_factory=list, max_length=MAX_PORTS)
    network_storages: list[NetworkStorageMount] = Field(
        default_factory=list, alias="networkStorages", max_length=30
    )
    command: str | None = Field(default=None, min_length=1, max_length=2047)
    entrypoint: str | None = Field(default=None, min_length=1, max_length=2047)
    min_cuda_version: str | None = Field(
        default=None, alias="minCudaVersion", pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}$"
    )

    def launch_options(self) -> dict[str, Any] | None:
        """The create options passed to Novita as given; None when all are defaults."""
        options: dict[str, Any] = {}
        if self.kind != "gpu":
            options["kind"] = self.kind
        if self.tools:
            options["tools"] = [t.model_dump() for t in self.tools]
        if self.network_storages:
            options["networkStorages"] = [
                {"id": m.id, "mountPoint": m.mount_point} for m in self.network_storages
            ]
        for key, value in (
            ("command", self.command),
            ("entrypoint", self.entrypoint),
            ("minCudaVersion", self.min_cuda_version),
        ):
            if value is not None:
                options[key] = value
        return options or None
    # The owning team: the key's own unless an admin names another (service.auth.roles).
    team: str | None = Field(default=None, pattern=TEAM_NAME.pattern, max_length=64)

    @staticmethod
    def raw_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The rules that need no valid body: reported with the other errors of a bad one,
        so `{}` names every required field at once."""
        found: list[tuple[str, str]] = []
        if not data.get("productName") and not data.get("productId"):
            found.append(("productName", "productName or productId is required"))
        if not data.get("templateId") and not data.get("imageUrl"):
            found.append(("templateId", "templateId or imageUrl is required"))
        return found

    def problems(self) -> list[tuple[str, str]]:
        """Rules across fields, reported against the field a client should fix."""
        found: list[tuple[str, str]] = []
        if not self.product_name and not self.product_id:
            found.append(("productName", "productName or productId is required"))
        if not self.template_id and not self.image_url:
            found.append(("templateId", "templateId or imageUrl is required"))
        if self.webhook_url is not None and not _HTTP_URL.match(self.webhook_url):
            found.append(("webhookUrl", "must be an http:// or https:// URL"))
        keys = [env.key for env in self.envs]
        if len(keys) != len(set(keys)):
            found.append(("envs", "the same key is given more than once"))
        if len(self.ports) + len(self.tools) > MAX_PORTS:
            found.append(("tools", f"ports and tools together must not exceed {MAX_PORTS}"))
        storage_ids = [m.id for m in self.network_storages]
        if len(storage_ids) != len(set(storage_ids)):
            found.append(("networkStorages", "the same storage is mounted more than once"))
        if self.kind == "cpu" and self.billing_mode == "spot":
            found.append(("billingMode", "CPU instances cannot be spot"))
        return found


class LastUsedBody(_Body):
    last_used_at: Moment | None = Field(default=None, alias="lastUsedAt")
