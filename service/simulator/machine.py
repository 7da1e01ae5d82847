"""The instance status machine of docs/novita-facts.md, driven by an injected clock.

An instance carries a plan: the steps still ahead of it, each a (field, value) pair for
`status` or `spotStatus`, and `next_at`, the monotonic time its current step ends.
`advance()` applies every step that is due and reports each change; it does no I/O, so
the simulator decides what a change means for capacity, listeners and pushed events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

STATUSES = (
    "pending", "toCreate", "creating", "pulling", "running", "toStart", "starting", "toStop",
    "stopping", "exited", "toRestart", "restarting", "toRemove", "removing", "removed",
    "toReset", "resetting", "migrating", "freezing",
)
SPOT_STATUSES = ("", "running", "notified", "reclaiming", "terminated")

# Where a status leads when left alone; also used when a test jumps to a status.
NATURAL_PATH: dict[str, tuple[str, ...]] = {
    "pending": ("toCreate", "creating", "pulling", "running"),
    "toCreate": ("creating", "pulling", "running"),
    "creating": ("pulling", "running"),
    "pulling": ("running",),
    "toStart": ("starting", "running"),
    "starting": ("running",),
    "toStop": ("stopping", "exited"),
    "stopping": ("exited",),
    "toRestart": ("restarting", "running"),
    "restarting": ("running",),
    "toRemove": ("removing", "removed"),
    "removing": ("removed",),
    "toReset": ("resetting", "pulling", "running"),
    "resetting": ("pulling", "running"),
    "migrating": ("running",),
}

# Statuses in which an instance holds no slot of its product x cluster pool.
RELEASED_STATUSES = frozenset({"exited", "removed"})
DELETING_STATUSES = frozenset({"toRemove", "removing", "removed"})

Field = Literal["status", "spotStatus", "app", "gone"]
Dwell = Callable[[str], float]


@dataclass(frozen=True)
class PortSpec:
    port: int
    type: str  # "http" | "tcp"


@dataclass(frozen=True)
class PortMapping:
    port: int
    type: str
    endpoint: str


@dataclass(frozen=True)
class Change:
    instance_id: str
    field: Field
    old: str
    new: str
    at: float  # unix seconds of the change
    at_monotonic: float
    status: str  # the instance's status and spot status right after the change
    spot_status: str


@dataclass
class SimInstance:
    """One simulated instance. Indexing (`inst["status"]`) reads the GET /gpu/instance view."""

    id: str
    seq: int
    name: str
    kind: str
    product_id: str
    product_name: str
    cluster_id: str
    cluster_name: str
    gpu_num: int
    cpu_num: int
    memory: int
    rootfs_size: int
    image_url: str
    billing_mode: str
    spot: bool  # holds a slot of the spot pool
    price: int
    created_at: float
    image_auth_id: str = ""
    command: str = ""
    entrypoint: str = ""
    ports: list[PortSpec] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    month: int = 0
    auto_renew: bool = False
    network_id: str = ""
    network_storages: list[tuple[str, str]] = field(default_factory=list)
    local_storage: int = 0
    template_id: str = ""
    ssh_password: str = ""

    status: str = "pending"
    status_error: tuple[str, str] | None = None
    spot_status: str = ""
    spot_reclaim_time: float = 0.0
    last_started_at: float | None = None
    last_stopped_at: float | None = None
    use_time: float = 0.0
    plan: list[tuple[Field, str]] = field(default_factory=list)
    next_at: float | None = None
    holds_capacity: bool = False

    # The container's app: `app_delay` None = use the simulator default; `never` = never up.
    app_delay: float | None = None
    app_never: bool = False
    app_up: bool = False
    app_up_at: float | None = None
    running_since: float | None = None  # monotonic, for use_time
    gone_at: float | None = None
    mappings: list[PortMapping] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        from service.simulator.render import render_instance

        return render_instance(self)[key]

    def due_at(self) -> float | None:
        """The earliest monotonic time something happens to this instance on its own."""
        times = [t for t in (self.next_at, self.gone_at) if t is not None]
        if self.status == "running" and not self.app_up and self.app_up_at is not None:
            times.append(self.app_up_at)
        return min(times) if times else None


class Machine:
    """Applies operations and due steps to instances; knows dwell times, not I/O."""

    def __init__(self, dwell: Dwell, removed_linger: float, default_app_delay: float | None,
                 ) -> None:
        self._dwell = dwell
        self._linger = removed_linger
        self._default_app_delay = default_app_delay

    def begin(
        self, inst: SimInstance, status: str, mono: float, unix: float,
        path: tuple[str, ...] | None = None,
    ) -> list[Change]:
        """Move `inst` to `status` now and follow `path` (default: its natural path)."""
        changes = self._set(inst, "status", status, mono, unix)
        steps = NATURAL_PATH.get(status, ()) if path is None else path
        self._plan(inst, [("status", s) for s in steps], status, mono)
        return changes

    def begin_reclaim(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        inst.spot_reclaim_time = unix
        changes = self._set(inst, "spotStatus", "notified", mono, unix)
        steps: list[tuple[Field, str]] = [
            ("spotStatus", "reclaiming"), ("spotStatus", "terminated"), ("status", "exited")
        ]
        self._plan(inst, steps, "notified", mono)
        return changes

    def advance(self, inst: SimInstance, mono: float, unix: float) -> list[Change]:
        """Apply every step due at `mono`, each stamped with the time it was due."""
        changes: list[Change] = []
        while inst.next_at is not None and inst.next_at <= mono and inst.plan:
            at = inst.next_at
            at_unix = unix - (mono - at)
            field_name, value = inst.plan.pop(0)
            changes += self._set(inst, field_name, value, at, at_unix)
            inst.next_at = at + self._dwell(value) if inst.plan else None
        if inst.status == "running" and not inst.app_up and inst.app_up_at is not None:
            if inst.app_up_at <= mono:
                inst.app_up = True
                changes.append(self._change(inst, "app", "down", "up", inst.app_up_at, unix, mono))
        if inst.gone_at is not None and inst.gone_at <= mono:
            changes.append(self._change(inst, "gone", "removed", "", inst.gone_at, unix, mono))
        return changes

    def set_app_delay(self, inst: SimInstance, delay: float | None, mono: float) -> None:
        """Change when the app comes up; None = never. Takes effect from now if running."""
        inst.app_never = delay is None
        inst.app_delay = delay
        if inst.status == "running" and not inst.app_up:
            base = inst.running_since if inst.running_since is not None else mono
            inst.app_up_at = None if delay is None else max(mono, base + delay)

    def _plan(self, inst: SimInstance, steps: list[tuple[Field, str]], current: str,
              mono: float) -> None:
        inst.plan = steps
        inst.next_at = mono + self._dwell(current) if steps else None

    def _set(self, inst: SimInstance, field_name: Field, value: str, mono: float,
             unix: float) -> list[Change]:
        if field_name == "spotStatus":
            old = inst.spot_status
            inst.spot_status = value
            return [self._change(inst, "spotStatus", old, value, mono, unix, mono)]
        old = inst.status
        if old == "running" and value != "running":
            self._leave_running(inst, mono)
        inst.status = value
        if value == "running":
            self._enter_running(inst, mono, unix)
        elif value == "exited":
            inst.last_stopped_at = unix
        if value == "removed":
            inst.gone_at = mono + self._linger
        elif old == "removed":
            inst.gone_at = None
        return [self._change(inst, "status", old, value, mono, unix, mono)]

    def _enter_running(self, inst: SimInstance, mono: float, unix: float) -> None:
        inst.last_started_at = unix
        inst.running_since = mono
        inst.status_error = None
        if inst.spot:
            # A spot instance that runs again (start, migrate) is no longer being reclaimed.
            inst.spot_status = "running"
            inst.spot_reclaim_time = 0.0
        delay = self._default_app_delay if inst.app_delay is None else inst.app_delay
        never = inst.app_never or (inst.app_delay is None and self._default_app_delay is None)
        inst.app_up = False
        inst.app_up_at = None if never or delay is None else mono + delay

    def _leave_running(self, inst: SimInstance, mono: float) -> None:
        if inst.running_since is not None:
            inst.use_time += max(0.0, mono - inst.running_since)
        inst.running_since = None
        inst.app_up = False
        inst.app_up_at = None

    @staticmethod
    def _change(inst: SimInstance, field_name: Field, old: str, new: str, at_mono: float,
                unix_now: float, mono_now: float) -> Change:
        at = unix_now - (mono_now - at_mono)
        return Change(inst.id, field_name, old, new, at, at_mono, inst.status, inst.spot_status)
