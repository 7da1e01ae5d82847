"""Lifecycle vocabulary: service statuses, the legal-transition table, and frozen domain objects.

Pure definitions only: no I/O. The repository turns rows into these objects and the single
state-change function (`service.db.repository.change_status`) consults `is_legal_transition`.
"""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

# The team of instances created before teams existed, of adopted ones, and of API_KEYS.
DEFAULT_TEAM = "default"


class Status(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    STARTING = "starting"
    RUNNING = "running"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"


class EventSource(StrEnum):
    API = "api"
    WEBHOOK = "webhook"
    RECONCILER = "reconciler"
    PROVISIONER = "provisioner"
    POLICY = "policy"


TERMINAL_STATUSES = frozenset({Status.DELETED, Status.FAILED})
# Statuses in which the provider is moving the instance: polled fast by the reconciler.
TRANSITIONAL_STATUSES = frozenset(
    {Status.PENDING, Status.PROVISIONING, Status.STARTING, Status.STOPPING, Status.DELETING}
)
# Statuses in which the provider bills GPU time (reports use the event history of these).
BILLING_STATUSES = frozenset({Status.RUNNING, Status.READY})

_S = Status
# Legal moves. Provider-driven repairs are included (the reconciler reports what Novita says,
# e.g. a `stopped` instance found running again), so the table is wider than the client-facing
# actions; the API checks its own action rules before asking for a transition.
# `failed` is terminal for the lifecycle, but a failed instance may still hold provider
# resources (e.g. a startup timeout), so deleting it stays allowed: nothing may leak.
LEGAL_TRANSITIONS: dict[Status, frozenset[Status]] = {
    _S.PENDING: frozenset({_S.PROVISIONING, _S.FAILED, _S.DELETING}),
    _S.PROVISIONING: frozenset(
        {_S.STARTING, _S.RUNNING, _S.STOPPED, _S.FAILED, _S.DELETING, _S.INTERRUPTED}
    ),
    _S.STARTING: frozenset(
        {_S.RUNNING, _S.STOPPING, _S.STOPPED, _S.FAILED, _S.DELETING, _S.INTERRUPTED}
    ),
    _S.RUNNING: frozenset(
        {_S.READY, _S.STARTING, _S.STOPPING, _S.STOPPED, _S.FAILED, _S.DELETING, _S.INTERRUPTED}
    ),
    _S.READY: frozenset(
        {_S.RUNNING, _S.STARTING, _S.STOPPING, _S.STOPPED, _S.FAILED, _S.DELETING, _S.INTERRUPTED}
    ),
    _S.STOPPING: frozenset(
        {_S.STOPPED, _S.RUNNING, _S.STARTING, _S.FAILED, _S.DELETING, _S.INTERRUPTED}
    ),
    _S.STOPPED: frozenset({_S.STARTING, _S.RUNNING, _S.FAILED, _S.DELETING, _S.INTERRUPTED}),
    _S.INTERRUPTED: frozenset({_S.STARTING, _S.RUNNING, _S.STOPPED, _S.FAILED, _S.DELETING}),
    _S.DELETING: frozenset({_S.DELETED, _S.FAILED}),
    _S.FAILED: frozenset({_S.DELETING}),
    _S.DELETED: frozenset(),
}


def is_legal_transition(current: Status, target: Status) -> bool:
    return target in LEGAL_TRANSITIONS[current]


# Notification event type per target status (README: notifications); others are
# `instance.status_changed`.
_NOTIFICATION_TYPES = {
    Status.PENDING: "instance.created",
    Status.PROVISIONING: "instance.provisioning",
    Status.RUNNING: "instance.running",
    Status.READY: "instance.ready",
    Status.STOPPED: "instance.stopped",
    Status.DELETED: "instance.deleted",
    Status.FAILED: "instance.failed",
    Status.INTERRUPTED: "instance.interrupted",
}


def notification_type(target: Status) -> str:
    return _NOTIFICATION_TYPES.get(target, "instance.status_changed")


def new_instance_id() -> str:
    return f"inst_{uuid.uuid4().hex}"


_event_counter = itertools.count()


def new_event_id() -> str:
    """Time-ordered ids (nanoseconds, a per-process counter, then randomness): listings that
    order by (created_at, id) keep the order rows were written in, even within one instant."""
    return f"evt_{time.time_ns():016x}{next(_event_counter) % 0x10000:04x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What a client asked for; the provisioner turns it into a provider instance."""

    name: str
    gpu_num: int = 1
    rootfs_size: int | None = None
    billing_mode: str = "onDemand"
    product_name: str | None = None
    product_id: str | None = None
    template_id: str | None = None
    image_url: str | None = None
    image_auth_id: str | None = None
    region: str | None = None
    regions: tuple[str, ...] = ()
    ports: tuple[dict[str, Any], ...] = ()
    envs: tuple[dict[str, str], ...] = ()
    webhook_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    readiness: dict[str, Any] | None = None
    auto_stop: dict[str, Any] | None = None
    on_interruption: dict[str, Any] | None = None
    # Create options passed to Novita (service.launch): kind, tools, networkStorages...
    launch: dict[str, Any] | None = None
    team: str = DEFAULT_TEAM


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    name: str
    status: Status
    novita_instance_id: str | None
    provider_status: str | None
    status_reason: str | None
    product_id: str | None
    product_name: str | None
    region: str | None
    gpu_num: int
    rootfs_size: int | None
    billing_mode: str
    price_per_hour: Decimal | None
    template_id: str | None
    image_url: str | None
    image_auth_id: str | None
    preferred_region: str | None
    regions: tuple[str, ...]
    ports: tuple[dict[str, Any], ...]
    envs: tuple[dict[str, str], ...]
    webhook_url: str | None
    labels: dict[str, str]
    readiness: dict[str, Any] | None
    auto_stop: dict[str, Any] | None
    port_mappings: tuple[dict[str, Any], ...]
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    running_at: datetime | None
    ready_at: datetime | None
    stopped_at: datetime | None
    deleted_at: datetime | None
    last_used_at: datetime | None
    provider_observed_at: datetime | None
    next_check_at: datetime | None
    claim_owner: str | None
    claim_expires_at: datetime | None
    event_seq: int
    version: int
    # Spot-interruption recovery (policy worker); defaults keep older constructors valid.
    interruption_policy: dict[str, Any] | None = None
    recovery_attempts: int = 0
    failed_attempts: int = 0  # consecutive failed polls or deferrals: their backoff
    next_probe_at: datetime | None = None  # readiness: the next probe, not before
    recovery_started_at: datetime | None = None
    recovery_next_at: datetime | None = None
    idle_noted_at: datetime | None = None
    replaces_instance_id: str | None = None
    replaced_by_instance_id: str | None = None
    # An action asked of Novita, not yet observed (see service.intents).
    action_intent: dict[str, Any] | None = None
    launch: dict[str, Any] | None = None
    # The owning team (keys of other teams see a 404); existing rows got DEFAULT_TEAM.
    team: str = DEFAULT_TEAM

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    id: int
    instance_id: str
    seq: int
    at: datetime
    source: EventSource
    kind: str
    from_status: Status | None
    to_status: Status | None
    provider_status: str | None
    reason: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: str
    instance_id: str
    event_seq: int
    type: str
    payload: dict[str, Any]
    target_url: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class TransitionResult:
    instance: Instance
    event: InstanceEvent | None  # None when the instance already had the requested status
