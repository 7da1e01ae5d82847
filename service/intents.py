"""Action intents: who asked Novita for an action, and why, written down before the call.

An action's status change may be observed first by a webhook, a poll or the relist, not by
the code that asked for it (the answer may arrive late, or be lost). So before calling
Novita the lifecycle stores an intent on the row (`instances.action_intent`); the first
status change into the action's target statuses then carries it, whoever observes it: the
event is the asker's (source, kind, reason and detail), with `observedBy` naming the
observer when it is someone else. The intent is used once, and only for `INTENT_TTL`
seconds (an intent left behind by a crash must not label a much later change).

Pure functions on the stored JSON; the lifecycle stores and clears it, and
`repository.change_status` applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain import EventSource, Status

INTENT_TTL = timedelta(minutes=5)

# The statuses an action leads to; the first of them reached consumes the intent.
TARGETS: Mapping[str, tuple[Status, ...]] = {
    "start": (Status.STARTING, Status.RUNNING, Status.READY),
    "stop": (Status.STOPPING, Status.STOPPED),
    "restart": (Status.STARTING,),  # it starts from running: only the way down counts
    "delete": (Status.DELETING, Status.DELETED),
}


def new_intent(
    action: str,
    *,
    source: EventSource,
    kind: str,
    reason: str | None,
    detail: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    if action not in TARGETS:
        raise ValueError(f"no intent for action {action!r}")
    return {
        "action": action,
        "source": source.value,
        "kind": kind,
        "reason": reason,
        "detail": dict(detail or {}),
        "at": now.isoformat(),
    }


def applicable(intent: Mapping[str, Any] | None, target: Status, now: datetime) -> bool:
    """Whether a change to `target` now is the one this intent asked for."""
    if not intent:
        return False
    try:
        asked_at = datetime.fromisoformat(str(intent["at"]))
        targets = TARGETS[str(intent["action"])]
    except (KeyError, ValueError):
        return False
    return target in targets and now - asked_at <= INTENT_TTL


@dataclass(frozen=True, slots=True)
class EventFields:
    source: EventSource
    kind: str
    reason: str | None
    detail: dict[str, Any]


def event_fields(
    intent: Mapping[str, Any],
    *,
    source: EventSource,
    kind: str,
    reason: str | None,
    detail: Mapping[str, Any],
) -> EventFields:
    """The event of the change the intent asked for: the asker's, whoever observed it."""
    asker = EventSource(intent["source"])
    merged = {**detail, **dict(intent.get("detail") or {})}
    if source is not asker:
        merged["observedBy"] = source.value
    return EventFields(
        source=asker,
        kind=str(intent.get("kind") or kind),
        reason=intent.get("reason") or reason,
        detail=merged,
    )
