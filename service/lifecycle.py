"""What a client can ask of an instance: create, start, stop, restart, delete, heartbeat.

The HTTP layer parses and presents; this module applies the lifecycle rules, calls Novita
and records the outcome through the single state-change function. End states (`running`,
`stopped`, `deleted`) are never set here: only the provider's confirmation, observed by
the reconciler, sets them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog

from service import intents
from service.db import idempotency
from service.db import repository as repo
from service.domain import EventSource, Instance, InstanceSpec, Status
from service.errors import (
    IllegalTransitionError,
    InstanceBusyError,
    InstanceLostError,
    InstanceNotFoundError,
    NoCapacityToStartError,
    ProviderStateConflictError,
    ServiceError,
    ValidationFailedError,
)
from service.novita.errors import (
    NovitaCapacityError,
    NovitaError,
    NovitaInvalidStateError,
    NovitaNetworkError,
    NovitaNotFoundError,
    NovitaProtocolError,
    NovitaServerError,
    NovitaTimeoutError,
)
from service.novita.limiter import Priority
from service.presenters import instance_view
from service.provisioning import preflight
from service.provisioning.naming import instance_id_from_provider_name
from service.provisioning.selection import SelectionRequest
from service.resources import Resources

log = structlog.get_logger(__name__)

# Novita statuses that show an action took effect (it is at, or on its way to, the target):
# a repeat whose first answer was lost is told "invalid state change", and these make it a
# success after all (docs/novita-facts.md).
CONFIRMING_STATUSES = {
    "start": frozenset({"toStart", "starting", "pulling", "running"}),
    "stop": frozenset({"toStop", "stopping", "exited"}),
    "restart": frozenset({"toRestart", "restarting"}),
    "delete": frozenset({"toRemove", "removing", "removed"}),
}

START_FROM = frozenset({Status.STOPPED, Status.INTERRUPTED})
STOP_FROM = frozenset({Status.RUNNING, Status.READY})
RESTART_FROM = frozenset({Status.RUNNING, Status.READY})
NOT_DELETABLE = frozenset({Status.DELETING, Status.DELETED})


@dataclass(frozen=True, slots=True)
class Created:
    status: int
    body: dict[str, Any]
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Asked:
    """An action asked of Novita: what, the change it leads to, who asked and why."""

    action: str
    kind: str
    target: Status
    source: EventSource
    reason: str | None = None
    detail: dict[str, Any] | None = None


# Answers after which Novita may or may not have done what was asked.
AMBIGUOUS_ERRORS = (NovitaServerError, NovitaTimeoutError, NovitaNetworkError, NovitaProtocolError)


def _with(detail: dict[str, Any] | None, extra: dict[str, Any] | None) -> dict[str, Any] | None:
    if extra is None:
        return detail
    return {**(detail or {}), **extra}


class Lifecycle:
    """`team`: only that team's instances exist for this lifecycle (None: every team).
    `actor`: the API key id recorded in every event this lifecycle causes."""

    def __init__(
        self, resources: Resources, *, team: str | None = None, actor: str | None = None
    ) -> None:
        self.db = resources.database
        self.novita = resources.novita
        self.clock = resources.clock
        self.caches = resources.caches
        self.team = team
        self._audit = {"keyId": actor} if actor is not None else None

    def _now(self) -> datetime:
        return self.clock.now()

    # -- create ----------------------------------------------------------------------------

    async def create(
        self, spec: InstanceSpec, *, caller: str, idempotency_key: str | None, fingerprint: str
    ) -> Created:
        """Record a `pending` instance; the provisioner submits it to Novita."""
        if idempotency_key is not None:
            async with self.db.transaction() as conn:
                stored = await idempotency.reserve(
                    conn, caller, idempotency_key, fingerprint, now=self._now()
                )
            if stored is not None:
                return Created(stored.status, stored.body, replayed=True)
        try:
            await self._check_against_catalogue(spec)
            async with self.db.transaction() as conn:
                now = self._now()
                result = await repo.insert_instance(conn, spec, now=now, detail=self._audit)
                body = instance_view(result.instance)
                if idempotency_key is not None:
                    await idempotency.complete(
                        conn, caller, idempotency_key, status=202, body=body, now=now
                    )
        except BaseException:
            if idempotency_key is not None:
                async with self.db.transaction() as conn:
                    await idempotency.release(conn, caller, idempotency_key)
            raise
        log.info("instance.accepted", instance_id=result.instance.id, name=spec.name)
        return Created(202, body, replayed=False)

    async def plan(self, spec: InstanceSpec) -> dict[str, Any]:
        """A dry run: where `spec` would land, at what price, and why; creates nothing.
        Novita must answer (503 otherwise); a request it can never satisfy is a 422."""
        request, view = await self._look_up(spec)
        invalid = preflight.problems(request, spec.template_id, view)
        if invalid:
            raise ValidationFailedError(invalid)
        return preflight.plan(request, view, self.caches.blocks.active())

    async def _check_against_catalogue(self, spec: InstanceSpec) -> None:
        """422 naming every field Novita's catalogue says can never work. When Novita cannot
        answer now, the request is accepted: the provisioner checks it again."""
        try:
            request, view = await self._look_up(spec)
        except NovitaError as exc:
            log.info("instance.validation_deferred", error=exc.code)
            return
        invalid = preflight.problems(request, spec.template_id, view)
        if invalid:
            raise ValidationFailedError(invalid)

    async def _look_up(
        self, spec: InstanceSpec
    ) -> tuple[SelectionRequest, preflight.CatalogueView]:
        request = SelectionRequest(
            product_name=spec.product_name,
            product_id=spec.product_id,
            billing_mode=spec.billing_mode,
            gpu_num=spec.gpu_num,
            rootfs_size=spec.rootfs_size,
            preferred_region=spec.region,
            regions=tuple(spec.regions),
            kind=str((spec.launch or {}).get("kind", "gpu")),
        )
        view = await preflight.look_up(request, spec.template_id, self.caches)
        if spec.rootfs_size is None and view.template is not None:
            request = replace(request, rootfs_size=view.template.rootfs_size)
        return request, view

    # -- reads -----------------------------------------------------------------------------

    async def get(self, id_or_novita_id: str) -> Instance:
        instance = await repo.find_instance_fast(self.db, id_or_novita_id)
        if instance is None or (self.team is not None and instance.team != self.team):
            raise InstanceNotFoundError.for_id(id_or_novita_id)
        return instance

    # -- actions ---------------------------------------------------------------------------

    async def start(
        self,
        id_or_novita_id: str,
        *,
        source: EventSource = EventSource.API,
        reason: str | None = None,
    ) -> Instance:
        instance = await self._for_action(id_or_novita_id, "start", START_FROM, Status.STARTING)
        asked = _Asked(
            "start", "start_requested", Status.STARTING, source, reason, self._audit
        )
        try:
            confirmed = await self._ask(instance, asked, self.novita.start_instance)
        except NovitaCapacityError as exc:
            async with self.db.transaction() as conn:
                await repo.append_note(
                    conn,
                    instance.id,
                    kind="start_failed",
                    source=source,
                    now=self._now(),
                    reason="no_capacity",
                    detail=_with(
                        {"providerReason": exc.reason, "message": exc.message}, self._audit
                    ),
                )
            raise NoCapacityToStartError(
                "Novita has no capacity to start this instance now; it stays "
                f"{instance.status.value}. Try again later.",
                instanceId=instance.id,
                providerReason=exc.reason,
            ) from None
        return await self._move(instance, asked, confirmed)

    async def stop(
        self,
        id_or_novita_id: str,
        *,
        source: EventSource = EventSource.API,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Instance:
        instance = await self._for_action(id_or_novita_id, "stop", STOP_FROM, Status.STOPPING)
        asked = _Asked(
            "stop", "stop_requested", Status.STOPPING, source, reason, _with(detail, self._audit)
        )
        confirmed = await self._ask(instance, asked, self.novita.stop_instance)
        return await self._move(instance, asked, confirmed)

    async def restart(self, id_or_novita_id: str) -> Instance:
        instance = await self._for_action(
            id_or_novita_id, "restart", RESTART_FROM, Status.STARTING
        )
        asked = _Asked(
            "restart", "restart_requested", Status.STARTING, EventSource.API, None, self._audit
        )
        confirmed = await self._ask(instance, asked, self.novita.restart_instance)
        return await self._move(instance, asked, confirmed)

    async def delete(
        self,
        id_or_novita_id: str,
        *,
        source: EventSource = EventSource.API,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Instance:
        instance = await self.get(id_or_novita_id)
        if instance.status in NOT_DELETABLE:
            raise IllegalTransitionError(instance.id, instance.status.value, "deleting")
        if instance.novita_instance_id is None:
            return await self._delete_unsubmitted(instance, source=source)
        owner = await self._provider_owner(instance.novita_instance_id)
        if owner is not None and owner != instance.id:
            return await self._delete_reassigned(instance, owner, source=source)
        asked = _Asked(
            "delete",
            "delete_requested",
            Status.DELETING,
            source,
            reason,
            _with(detail, self._audit),
        )
        confirmed = await self._ask(instance, asked, self.novita.delete_instance)
        return await self._move(instance, asked, confirmed)

    async def touch(self, id_or_novita_id: str, at: datetime | None) -> Instance:
        now = self._now()
        instance = await self.get(id_or_novita_id)
        if instance.is_terminal:
            raise IllegalTransitionError(instance.id, instance.status.value, "used")
        async with self.db.transaction() as conn:
            return await repo.set_last_used(conn, instance.id, at or now, now=now)

    # -- helpers ---------------------------------------------------------------------------

    async def _for_action(
        self,
        id_or_novita_id: str,
        action: str,
        allowed_from: frozenset[Status],
        target: Status,
    ) -> Instance:
        instance = await self.get(id_or_novita_id)
        if instance.status not in allowed_from or instance.novita_instance_id is None:
            raise IllegalTransitionError(
                instance.id,
                instance.status.value,
                target.value,
                _refusal(instance, action, allowed_from),
            )
        return instance

    async def _ask(
        self, instance: Instance, asked: _Asked, call: Callable[[str], Awaitable[None]]
    ) -> dict[str, Any] | None:
        """Write down the intent, then ask Novita. Returns the detail of a confirmation
        after a refusal (see `_confirm_or_raise`), else None.

        The intent is cleared again when Novita surely did nothing; after an answer that
        leaves it open (timeout, 5xx, unreadable) it stays, so the change, if it happened,
        is still recorded as ours when it is observed.
        """
        assert instance.novita_instance_id is not None
        intent = intents.new_intent(
            asked.action,
            source=asked.source,
            kind=asked.kind,
            reason=asked.reason,
            detail=asked.detail,
            now=self._now(),
        )
        async with self.db.transaction() as conn:
            await repo.set_action_intent(conn, instance.id, intent)
        try:
            await call(instance.novita_instance_id)
            return None
        except NovitaError as exc:
            try:
                return await self._confirm_or_raise(instance, asked.action, exc)
            except NovitaError as refused:
                if not isinstance(refused, AMBIGUOUS_ERRORS):
                    await self._clear_intent(instance.id)
                raise
            except ServiceError:
                await self._clear_intent(instance.id)
                raise

    async def _clear_intent(self, instance_id: str) -> None:
        async with self.db.transaction() as conn:
            await repo.set_action_intent(conn, instance_id, None)

    async def _move(
        self, instance: Instance, asked: _Asked, confirmed: dict[str, Any] | None
    ) -> Instance:
        """Record the change asked for, unless an observation already did (with the intent)."""
        async with self.db.transaction() as conn:
            current = await repo.get_instance(conn, instance.id, for_update=True)
            if current.status is not asked.target and current.status in intents.TARGETS[
                asked.action
            ]:
                await repo.set_action_intent(conn, instance.id, None, locked=current)
                return current  # observed further along already
            result = await repo.change_status(
                conn,
                instance.id,
                asked.target,
                source=asked.source,
                now=self._now(),
                kind=asked.kind,
                reason=asked.reason,
                detail=_with(asked.detail, confirmed),
                locked=current,
            )
            if result.event is None:
                await repo.set_action_intent(conn, instance.id, None, locked=result.instance)
        log.info(
            "instance.action", instance_id=instance.id, action=asked.kind, status=asked.target.value
        )
        return result.instance

    async def _delete_unsubmitted(
        self, instance: Instance, *, source: EventSource = EventSource.API
    ) -> Instance:
        """Nothing exists at Novita unless a create is under way: only then must we wait."""
        now = self._now()
        claimed = instance.claim_expires_at is not None and instance.claim_expires_at > now
        if instance.submitted_at is not None or claimed:
            raise InstanceBusyError(
                "the instance is being submitted to Novita right now; retry the delete in a "
                "few seconds",
                instanceId=instance.id,
            )
        async with self.db.transaction() as conn:
            deleting = await repo.change_status(
                conn,
                instance.id,
                Status.DELETING,
                source=source,
                now=now,
                kind="delete_requested",
                detail=self._audit,
            )
            result = await repo.change_status(
                conn,
                instance.id,
                Status.DELETED,
                source=source,
                now=now,
                kind="deleted",
                reason="never_submitted",
                detail=_with(
                    {"note": "never submitted to Novita; nothing to release"}, self._audit
                ),
                locked=deleting.instance,  # still locked by this transaction
            )
        return result.instance

    async def _provider_owner(self, novita_id: str) -> str | None:
        """Which of our instances Novita's instance `novita_id` was made for, by its name
        (None: unknown, not found, or not named by us)."""
        try:
            found = await self.novita.get_instance(novita_id, priority=Priority.URGENT)
        except NovitaError:
            return None  # the delete itself will say what is wrong
        return instance_id_from_provider_name(found.name)

    async def _delete_reassigned(
        self, instance: Instance, owner: str, *, source: EventSource
    ) -> Instance:
        """Novita's instance with this row's id was made for another of our rows (the
        provider reused the id after its world was reset): this row's own instance is long
        gone, and the other one is not ours to delete. Record the delete without acting."""
        assert instance.novita_instance_id is not None
        now = self._now()
        detail = {
            "novitaInstanceId": instance.novita_instance_id,
            "belongsTo": owner,
            "note": "Novita's instance with this id belongs to another instance; not deleted",
            **(self._audit or {}),
        }
        async with self.db.transaction() as conn:
            deleting = await repo.change_status(
                conn, instance.id, Status.DELETING, source=source, now=now,
                kind="delete_requested", detail=self._audit,
            )
            result = await repo.change_status(
                conn, instance.id, Status.DELETED, source=source, now=now, kind="deleted",
                reason="provider_id_reassigned", detail=detail, locked=deleting.instance,
            )
        log.warning(
            "instance.delete_skipped_reassigned",
            instance_id=instance.id,
            novita_instance_id=instance.novita_instance_id,
            belongs_to=owner,
        )
        return result.instance

    async def _confirm_or_raise(
        self, instance: Instance, action: str, exc: NovitaError
    ) -> dict[str, Any]:
        """An action Novita refused as "invalid state change" may have worked on an earlier
        try whose answer was lost: re-read the instance, and if it is at or heading to the
        action's target, the action stands (the event says how it was confirmed). Any other
        refusal is raised as the client-facing error."""
        if isinstance(exc, NovitaInvalidStateError):
            provider_status = await self._provider_status(instance)
            if provider_status in CONFIRMING_STATUSES[action]:
                log.info(
                    "instance.action_confirmed",
                    instance_id=instance.id,
                    action=action,
                    provider_status=provider_status,
                )
                return {"confirmedBy": "provider_read", "providerStatus": provider_status}
            raise self._conflict(instance, action, provider_status) from None
        if action == "delete" and isinstance(exc, NovitaNotFoundError):
            return {"confirmedBy": "not_found"}
        raise self._translate_other(instance, exc) from None

    def _conflict(
        self, instance: Instance, action: str, provider_status: str | None
    ) -> ProviderStateConflictError:
        return ProviderStateConflictError(
            f"Novita refused to {action} the instance in its current state "
            f"({provider_status or 'unknown'}); its record will catch up shortly",
            instanceId=instance.id,
            currentStatus=instance.status.value,
            providerStatus=provider_status,
        )

    def _translate_other(self, instance: Instance, exc: NovitaError) -> Exception:
        if isinstance(exc, NovitaNotFoundError):
            return InstanceLostError("Novita no longer has this instance", instanceId=instance.id)
        return exc

    async def _provider_status(self, instance: Instance) -> str | None:
        """Novita's status now ("removed" when it has no such instance); None if unknown."""
        assert instance.novita_instance_id is not None
        try:
            novita_id = instance.novita_instance_id
            return (await self.novita.get_instance(novita_id, priority=Priority.URGENT)).status
        except NovitaNotFoundError:
            return "removed"
        except NovitaError:
            return None


def _refusal(instance: Instance, action: str, allowed_from: frozenset[Status]) -> str:
    """Why `action` cannot be done now, and what to do instead, in words."""
    status = instance.status
    allowed = " or ".join(sorted(s.value for s in allowed_from))
    said = f"instance {instance.id} is {status.value}"
    if action == "restart" and status in START_FROM:
        return f"{said}: only a running or ready instance can be restarted; start it instead"
    if action == "start" and status in (Status.RUNNING, Status.READY, Status.STARTING):
        return f"{said}: it is already running or on its way"
    if action == "stop" and status in (Status.STOPPED, Status.STOPPING):
        return f"{said}: it is already stopped or on its way"
    if status in allowed_from:  # allowed, but never reached Novita
        return f"{said} but was never created at Novita; nothing to {action}"
    if instance.is_terminal:
        done = {"start": "started", "stop": "stopped", "restart": "restarted"}[action]
        return f"{said}: a {status.value} instance cannot be {done}; create a new one"
    return f"{said}: {action} needs an instance that is {allowed}; try again when it is"
