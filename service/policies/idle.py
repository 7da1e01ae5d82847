"""Idle auto-stop: which policy applies to an instance, and from when it counts as idle.

Idle time counts from the newest of the instance's last heartbeat (`last_used_at`) and the
moment it became `ready` in its current run (`ready_at` is cleared when a new run starts,
so an earlier run's readiness never counts). A grace period after each (re)start
(`running_at` of the current run) keeps a freshly started instance from being stopped
before its client had a chance to send a heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from service.domain import Instance, Status

IdleAction = Literal["stop", "delete"]


@dataclass(frozen=True, slots=True)
class IdlePolicy:
    idle_minutes: int
    action: IdleAction = "stop"


@dataclass(frozen=True, slots=True)
class IdleDefaults:
    """The service-wide policy (settings); `idle_minutes=None` means no default."""

    idle_minutes: int | None = None
    action: IdleAction = "stop"
    grace_minutes: float = 10.0


def effective_policy(instance: Instance, defaults: IdleDefaults) -> IdlePolicy | None:
    """The instance's own `autoStop`, else the service default, else None (never stopped)."""
    own = instance.auto_stop
    if own is not None:
        action: IdleAction = "delete" if own.get("action") == "delete" else "stop"
        return IdlePolicy(idle_minutes=int(own["idleMinutes"]), action=action)
    if defaults.idle_minutes is not None:
        return IdlePolicy(idle_minutes=defaults.idle_minutes, action=defaults.action)
    return None


def idle_since(instance: Instance) -> datetime | None:
    """Start of the current idle period; None when the instance is not ready in this run."""
    if instance.status is not Status.READY or instance.ready_at is None:
        return None
    if instance.last_used_at is not None and instance.last_used_at > instance.ready_at:
        return instance.last_used_at
    return instance.ready_at


def idle_deadline(instance: Instance, policy: IdlePolicy, grace_minutes: float) -> datetime | None:
    """When the policy acts on the instance (None: it is not a candidate at all)."""
    since = idle_since(instance)
    if since is None:
        return None
    deadline = since + timedelta(minutes=policy.idle_minutes)
    if instance.running_at is not None:
        deadline = max(deadline, instance.running_at + timedelta(minutes=grace_minutes))
    return deadline
