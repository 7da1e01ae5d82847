"""Novita's instance status → the service status (docs/lifecycle.md), as pure functions.

Precedence, first match wins:
1. Not found, or `removed` → `deleted` (not found without our delete → `failed`, `lost`);
   `toRemove`/`removing` → `deleting`.
2. A spot instance whose `spotStatus` is `reclaiming`/`terminated` → `interrupted` while
   Novita shows it running or stopping/stopped; once a start is under way (`toStart`...),
   the table applies again: Novita keeps `terminated` until the instance runs.
3. `statusError` set while not `running` → `failed` (`provider_error`).
4. The table. The create-path statuses (`pending`...`pulling`) mean `provisioning` only
   for an instance that never ran; after that they are a start, reset or migration
   (`starting`), since an instance never goes back to provisioning.
   `running` keeps `ready`: readiness is ours, Novita has no equivalent.
   Unrecognised values (console legacy capitals, `other`) keep the current status.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain import Status, is_legal_transition

_CREATE_PATH = frozenset({"pending", "toCreate", "creating", "pulling"})
_TABLE: dict[str, Status] = {
    "running": Status.RUNNING,
    "toStart": Status.STARTING,
    "starting": Status.STARTING,
    "toRestart": Status.STARTING,
    "restarting": Status.STARTING,
    "toReset": Status.STARTING,
    "resetting": Status.STARTING,
    "migrating": Status.STARTING,
    "toStop": Status.STOPPING,
    "stopping": Status.STOPPING,
    # Meaning unknown, not usable; alert if it persists, never call it failed.
    "freezing": Status.STOPPING,
    "exited": Status.STOPPED,
    "toRemove": Status.DELETING,
    "removing": Status.DELETING,
    "removed": Status.DELETED,
}
_RECLAIMED_SPOT = frozenset({"reclaiming", "terminated"})
# Novita statuses in which a reclaimed spot marker still describes the instance.
_RECLAIM_VISIBLE = frozenset({"running", "toStop", "stopping", "exited"})
_NEVER_RAN = frozenset({Status.PENDING, Status.PROVISIONING})

PROVIDER_STATUS_MAX_LENGTH = 32  # the width of `instances.provider_status`

LOST = "lost"
PROVIDER_ERROR = "provider_error"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one read of Novita said about an instance."""

    status: str | None  # None: Novita has no such instance
    spot_status: str | None = None
    has_status_error: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    target: Status | None  # None: unrecognised, keep the current status
    reason: str | None = None


def map_provider_status(current: Status, observed: Observation) -> Decision:
    status = observed.status
    if status is None:
        if current is Status.DELETING:
            return Decision(Status.DELETED)
        return Decision(Status.FAILED, LOST)
    if status == "removed":
        return Decision(Status.DELETED)
    if status in ("toRemove", "removing"):
        return Decision(Status.DELETING)
    if observed.spot_status in _RECLAIMED_SPOT and status in _RECLAIM_VISIBLE:
        return Decision(Status.INTERRUPTED)
    if observed.has_status_error and status != "running":
        return Decision(Status.FAILED, PROVIDER_ERROR)
    if status in _CREATE_PATH:
        return Decision(Status.PROVISIONING if current in _NEVER_RAN else Status.STARTING)
    if status == "running" and current is Status.READY:
        return Decision(Status.READY)
    target = _TABLE.get(status)
    return Decision(target)


def stored_provider_status(status: str | None) -> str | None:
    """Novita's raw status as the row keeps it: unknown values can be of any length."""
    return status[:PROVIDER_STATUS_MAX_LENGTH] if status else None


def transition_path(current: Status, target: Status) -> tuple[Status, ...]:
    """The legal steps from `current` to `target`; () if there is none.

    Only one detour is taken: an instance Novita removed without our delete goes through
    `deleting` to `deleted`, so its history says what happened instead of being refused.
    """
    if current is target or is_legal_transition(current, target):
        return (target,)
    if target is Status.DELETED and is_legal_transition(current, Status.DELETING):
        return (Status.DELETING, Status.DELETED)
    return ()


def contradicts_action(current: Status, target: Status) -> bool:
    """Whether Novita still shows the state from before an action we asked for.

    Novita applies start/stop/delete a moment after answering; until then a read shows the
    old state. Taken at its word at once, it would undo the action in our record.
    """
    if current is Status.STOPPING:
        return target in (Status.RUNNING, Status.READY)
    if current is Status.STARTING:
        return target in (Status.STOPPED, Status.INTERRUPTED)
    if current is Status.DELETING:
        return target not in (Status.DELETING, Status.DELETED)
    return False
