"""The JSON the service returns, as `TypedDict`s: plain dicts at run time (a field the
service adds later does no harm), checked by a type checker. Keys are the API's camelCase.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args

InstanceStatus = Literal[
    "pending",
    "provisioning",
    "starting",
    "running",
    "ready",
    "stopping",
    "stopped",
    "interrupted",
    "deleting",
    "deleted",
    "failed",
]
STATUSES: tuple[str, ...] = get_args(InstanceStatus)
TERMINAL_STATUSES = frozenset({"deleted", "failed"})


class PortSpec(TypedDict):
    port: int
    type: str


class Placement(TypedDict):
    """Where a dry run would create the instance; prices are USD strings."""

    region: str
    clusterId: str
    productId: str
    productName: str
    pricePerGpuHour: str | None
    pricePerHour: str | None  # for the request's GPU count
    rootfsSize: int | None


class PlanCandidate(Placement):
    rank: int | None  # order of creation attempts; None: never tried (see reason)
    chosen: bool
    reason: str


class Plan(TypedDict):
    """`POST /api/instances?dryRun=true`: the plan of a create; nothing was created."""

    dryRun: bool
    chosen: Placement | None  # None: a create would fail now (no capacity)
    billingMode: str
    gpuNum: int
    regionOrder: list[str]
    candidates: list[PlanCandidate]
    message: str


class Instance(TypedDict):
    id: str
    name: str
    status: str
    statusReason: str | None
    providerStatus: str | None
    novitaInstanceId: str | None
    productId: str | None
    productName: str | None
    region: str | None
    preferredRegion: str | None
    regions: list[str]
    gpuNum: int
    rootfsSize: int | None
    billingMode: str
    pricePerHour: str | None
    templateId: str | None
    imageUrl: str | None
    imageAuthId: str | None
    ports: list[PortSpec]
    envKeys: list[str]
    webhookUrl: str | None
    labels: dict[str, str]
    readiness: dict[str, Any] | None
    autoStop: dict[str, Any] | None
    portMappings: list[dict[str, Any]]
    kind: str  # "gpu" or "cpu"
    tools: list[dict[str, Any]]  # [{name, port, type}]
    networkStorages: list[dict[str, str]]  # [{id, mountPoint}]
    command: str | None
    entrypoint: str | None
    minCudaVersion: str | None
    createdAt: str
    updatedAt: str
    submittedAt: str | None
    runningAt: str | None
    readyAt: str | None
    stoppedAt: str | None
    deletedAt: str | None
    lastUsedAt: str | None
    sequence: int


class InstanceEvent(TypedDict):
    sequence: int
    at: str
    source: str
    kind: str
    fromStatus: str | None
    toStatus: str | None
    providerStatus: str | None
    reason: str | None
    detail: Any


class StreamEvent(InstanceEvent):
    """One event of `GET /api/events`: the instance event, its id in the whole history
    (what `Last-Event-ID` resumes from) and its instance."""

    id: str
    instanceId: str


class Notification(TypedDict, total=False):
    id: str
    instanceId: str
    sequence: int
    type: str
    status: str  # pending, delivered, failed, cancelled, no_target
    targetUrl: str | None
    attempts: int
    nextAttemptAt: str | None
    createdAt: str
    updatedAt: str
    lastStatusCode: int | None
    lastError: str | None
    deliveredAt: str | None
    payload: dict[str, Any]  # only in single-notification answers


class NotificationAttempt(TypedDict):
    number: int
    startedAt: str
    durationMs: int | None
    targetUrl: str
    outcome: str
    statusCode: int | None
    error: str | None


class NotificationDetail(Notification, total=False):
    attemptLog: list[NotificationAttempt]
