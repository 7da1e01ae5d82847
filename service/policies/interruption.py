"""Spot interruption: which recovery applies, when it gives up, and what a replacement is.

Recovery is bounded twice: by attempts (each restart refused for capacity, each
replacement created) and by time since the interruption was first seen. Attempts back off
exponentially from a base delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from service.backoff import backoff_seconds
from service.domain import Instance, InstanceSpec
from service.provisioning.selection import DEFAULT_REGION_PRIORITY

RecoveryAction = Literal["notify", "restart", "recreate"]
_ACTIONS: tuple[RecoveryAction, ...] = ("notify", "restart", "recreate")


@dataclass(frozen=True, slots=True)
class InterruptionPolicy:
    action: RecoveryAction
    max_attempts: int
    max_minutes: float


@dataclass(frozen=True, slots=True)
class InterruptionDefaults:
    action: RecoveryAction = "notify"
    max_attempts: int = 5
    max_minutes: float = 60.0
    backoff_seconds: float = 30.0


def effective_policy(instance: Instance, defaults: InterruptionDefaults) -> InterruptionPolicy:
    """The instance's own `onInterruption` over the service defaults, field by field."""
    own = instance.interruption_policy or {}
    action = next((a for a in _ACTIONS if a == own.get("action")), defaults.action)
    return InterruptionPolicy(
        action=action,
        max_attempts=int(own.get("maxAttempts") or defaults.max_attempts),
        max_minutes=float(own.get("maxMinutes") or defaults.max_minutes),
    )


def deadline(started_at: datetime, policy: InterruptionPolicy) -> datetime:
    return started_at + timedelta(minutes=policy.max_minutes)


def is_exhausted(
    attempts: int, started_at: datetime, policy: InterruptionPolicy, now: datetime
) -> bool:
    return attempts >= policy.max_attempts or now >= deadline(started_at, policy)


def next_attempt_at(attempts: int, now: datetime, base_seconds: float) -> datetime:
    """After the `attempts`-th failed attempt: base, 2 x base, 4 x base, ..."""
    return now + timedelta(seconds=backoff_seconds(attempts, base=base_seconds, cap=math.inf))


def replacement_regions(instance: Instance) -> tuple[str, ...]:
    """The original's region order without the region that reclaimed it.

    The preferred region moves into the list (a replacement has none of its own), and the
    default priority stands in for an empty custom list, so the provisioner's own fallback
    to "every other region" puts the reclaimed region last instead of first.
    """
    wanted = [instance.preferred_region] if instance.preferred_region else []
    wanted += list(instance.regions or DEFAULT_REGION_PRIORITY)
    lost = (instance.region or "").upper()
    order: list[str] = []
    for region in wanted:
        if region and region.upper() != lost and region not in order:
            order.append(region)
    return tuple(order)


def replacement_spec(instance: Instance) -> InstanceSpec:
    """The original request, rebuilt from the row, for a replacement in another region."""
    return InstanceSpec(
        name=instance.name,
        gpu_num=instance.gpu_num,
        rootfs_size=instance.rootfs_size,
        billing_mode=instance.billing_mode,
        # By name when known: the chosen product id may not be sold in the other regions.
        product_name=instance.product_name,
        product_id=None if instance.product_name else instance.product_id,
        template_id=instance.template_id,
        image_url=instance.image_url,
        image_auth_id=instance.image_auth_id,
        region=None,
        regions=replacement_regions(instance),
        ports=instance.ports,
        envs=instance.envs,
        webhook_url=instance.webhook_url,
        labels=dict(instance.labels),
        readiness=instance.readiness,
        auto_stop=instance.auto_stop,
        on_interruption=instance.interruption_policy,
        launch=instance.launch,
        team=instance.team,  # the replacement stays with the team that owns the original
    )
