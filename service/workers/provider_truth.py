"""The one rule for applying what Novita said about an instance (docs/architecture.md, Observe).

Webhooks (`applier.py`), per-instance polls (`reconciler.py`) and the relist
(`relister.py`) all hand what they learnt to `apply_observation`, in a transaction that
locks the row, and get the same verdict for the same report:

- a terminal row never changes (`terminal`);
- stale: a report observed before the newest observation already applied is dropped, so
  the record never moves backwards (`stale`); a recorded time in the future (from before
  observation times were bounded by the present) counts as no observation;
- the status mapping (`status_map`) decides the target; a status it does not know keeps
  the row's status, and what was seen is still recorded (`unrecognised_status`);
- an action we asked for (start, stop, delete) wins over a report still showing the state
  before it while the action is younger than the settle window, counted from the event
  that recorded it (in the database, so every process and every restart agrees)
  (`superseded`); after that Novita's word stands, except that a delete Novita never
  started is to be sent again (`resend_delete`, which only a poll can do);
- a move the transition table refuses is logged and not recorded (`refused`);
- otherwise each step of the path is recorded through `repository.change_status`
  (`applied`, or `unchanged` when nothing new was learnt). A step to `running` leaves a
  commit note (`RUNNING_OBSERVED`): this process's readiness worker probes at once,
  whichever channel saw it.

`plan` holds the rules that need only the row; the applier uses it on a whole batch of
webhooks, writing the reports that only confirm a status (`confirmed`) in one statement and
handing every other one to `apply_observation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import repository as repo
from service.db.engine import NOTIFICATIONS_QUEUED, note_after_commit
from service.db.models import instance_events
from service.db.provider_facts import ProviderFacts
from service.domain import EventSource, Instance, InstanceEvent, Status
from service.provisioning.status_map import (
    Observation,
    contradicts_action,
    map_provider_status,
    stored_provider_status,
    transition_path,
)

log = structlog.get_logger(__name__)

# Commit-note topic: an instance was recorded `running` (the items are our instance ids).
RUNNING_OBSERVED = "instance.running"


class Verdict(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    TERMINAL = "terminal"
    STALE = "stale"
    UNRECOGNISED = "unrecognised_status"
    SUPERSEDED = "superseded"
    RESEND_DELETE = "resend_delete"
    REFUSED = "refused"
    IGNORED_STATE = "ignored_state"


@dataclass(frozen=True, slots=True)
class Report:
    """What one channel learnt from Novita about one instance."""

    observation: Observation  # status None: Novita has no such instance
    observed_at: datetime  # when Novita said it (no later than now)
    source: EventSource
    detail: Mapping[str, Any]
    # The instance's port mappings as reported; None when the report says nothing of them.
    port_mappings: list[dict[str, Any]] | None = None
    # `instance.ready`: the instance answers on its ports (running → ready), no status.
    ready: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    verdict: Verdict
    before: Instance  # the row as it was
    recorded: tuple[tuple[Status, InstanceEvent], ...] = ()  # each step that made an event

    @property
    def status(self) -> Status | None:
        """The status recorded last, when something was."""
        return self.recorded[-1][0] if self.recorded else None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a report means for a row, decided without the database (`plan`)."""

    verdict: Verdict | None = None  # decided: nothing to record
    target: Status | None = None  # else the status the report leads to
    reason: str | None = None
    provider_status: str | None = None
    unrecognised: bool = False
    # The target contradicts the action that moved the row into its status: whether the
    # action is still settling is read from the database (`apply_observation`).
    contradicts_action: bool = False
    # The report keeps the row's status: applying it records no event, only refreshes the
    # row's provider facts (`confirmed`).
    confirms: bool = False


def plan(current: Instance | ProviderFacts, report: Report, *, now: datetime) -> Plan:
    """The rules of the module docstring that need nothing but the row: terminal, stale,
    `instance.ready`, the status mapping, and whether an action is contradicted."""
    if current.is_terminal:
        return Plan(Verdict.TERMINAL)
    newest = current.provider_observed_at
    if newest is not None and report.observed_at < newest <= now:
        return Plan(Verdict.STALE)
    if report.ready:
        if current.status is not Status.RUNNING:
            return Plan(Verdict.IGNORED_STATE)
        return Plan(target=Status.READY, provider_status=current.provider_status)
    decision = map_provider_status(current.status, report.observation)
    target = decision.target
    unrecognised = target is None
    if target is None:
        log.warning(
            "reconcile.unknown_provider_status",
            instance_id=current.id,
            provider_status=report.observation.status,
            source=report.source.value,
        )
        target = current.status
    contradicts = contradicts_action(current.status, target)
    return Plan(
        target=target,
        reason=decision.reason,
        provider_status=stored_provider_status(report.observation.status),
        unrecognised=unrecognised,
        contradicts_action=contradicts,
        confirms=target is current.status and not contradicts,
    )


def confirmed(
    current: ProviderFacts, report: Report, planned: Plan, now: datetime
) -> ProviderFacts:
    """The row after a confirming report (`Plan.confirms`), with the values
    `repository.change_status` writes for a change to the status the row already has."""
    newest = current.provider_observed_at
    return replace(
        current,
        provider_status=planned.provider_status or current.provider_status,
        provider_observed_at=(
            report.observed_at if newest is None or report.observed_at > newest else newest
        ),
        updated_at=now,
        version=current.version + 1,
    )


async def apply_observation(
    conn: AsyncConnection,
    instance_id: str,
    report: Report,
    *,
    now: datetime,
    settle_seconds: float,
    next_check_at: Callable[[Status], datetime] | None = None,
) -> Applied:
    """Apply `report` to the instance (the row is locked for the rest of the transaction).
    `next_check_at(status)`, when given, says when a live instance is next polled."""
    current = await repo.get_instance(conn, instance_id, for_update=True)
    planned = plan(current, report, now=now)
    if planned.verdict is not None:
        return Applied(planned.verdict, current)
    assert planned.target is not None
    target = planned.target
    if planned.contradicts_action:
        if await _action_settling(conn, current, now, settle_seconds):
            return Applied(Verdict.SUPERSEDED, current)
        if current.status is Status.DELETING:
            return Applied(Verdict.RESEND_DELETE, current)
    path = transition_path(current.status, target)
    if not path:
        log.warning(
            "reconcile.transition_refused",
            instance_id=instance_id,
            status=current.status.value,
            provider_status=report.observation.status,
            target=target.value,
            source=report.source.value,
        )
        return Applied(Verdict.REFUSED, current)
    provider_status = planned.provider_status
    reason = planned.reason
    changes: dict[str, Any] = {}
    if report.port_mappings is not None:
        changes["port_mappings"] = merged_port_mappings(current, report.port_mappings)
    final = path[-1]
    if next_check_at is not None and final not in (Status.DELETED, Status.FAILED):
        changes["next_check_at"] = next_check_at(final)
    recorded: list[tuple[Status, InstanceEvent]] = []
    row = current  # locked above; each step returns the row as it wrote it
    for step in path:
        result = await repo.change_status(
            conn,
            current.id,
            step,
            source=report.source,
            now=now,
            reason=reason if step is final else None,
            provider_status=provider_status,
            observed_at=report.observed_at,
            detail=report.detail,
            changes=changes or None,
            locked=row,
        )
        row = result.instance
        if result.event is not None:
            recorded.append((step, result.event))
            note_after_commit(conn, NOTIFICATIONS_QUEUED, current.id)
            if step is Status.RUNNING:
                note_after_commit(conn, RUNNING_OBSERVED, current.id)
    if planned.unrecognised:
        return Applied(Verdict.UNRECOGNISED, current, tuple(recorded))
    return Applied(Verdict.APPLIED if recorded else Verdict.UNCHANGED, current, tuple(recorded))


async def _action_settling(
    conn: AsyncConnection, current: Instance, now: datetime, settle_seconds: float
) -> bool:
    """Whether the action that moved the row into its status is younger than the window:
    its time is that of the row's latest event (the one that recorded the action)."""
    recorded_at: datetime | None = await conn.scalar(
        sa.select(instance_events.c.at).where(
            instance_events.c.instance_id == current.id,
            instance_events.c.seq == current.event_seq,
        )
    )
    if recorded_at is None:
        return False
    return bool(now - recorded_at < timedelta(seconds=settle_seconds))


def merged_port_mappings(current: Instance, reported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reported mappings; an endpoint the report left out (Novita's list documents
    none) is kept from what an earlier report said about the same port."""
    known = {(m["port"], m["type"]): m.get("endpoint") for m in current.port_mappings}
    return [
        m if m["endpoint"] else {**m, "endpoint": known.get((m["port"], m["type"]))}
        for m in reported
    ]
