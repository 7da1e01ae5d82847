"""The provisioner: turns `pending` instances into Novita instances, never two for one request.

One batch claims due rows (`service.db.claims`), then handles each:

1. A row that already has `submitted_at` may have an instance at Novita (a create whose
   answer was lost, or a process that died between the call and the commit): look it up
   by name first and adopt it. Not found yet, and the create may still be landing → wait
   until `submitted_at + create_settle_seconds`, then create again.
2. Resolve the template (cached) and merge it with the request; select candidates (one
   products call for all regions, cached); for each candidate, commit the intent
   (`submitted_at`), then create:
   - success → `provisioning` with the Novita id, region, product and price;
   - INSUFFICIENT_RESOURCE → block that region x product for a while, try the next;
   - CUDA_VERSION_INCOMPATIBLE → a property of the product (its driver is older than the
     image needs): skip that product in every region, try the next candidate;
   - auth/validation/other refusals → `failed`, `create_rejected`, no other region tried;
   - timeout, 5xx, network, unreadable answer (ambiguous) → look up by name, adopt if
     found, else wait as in 1;
   - breaker open or 429 → nothing was created: back off and retry later.
   All candidates out of capacity → `failed`, `no_capacity`, every attempt (with Novita's
   reason) in the detail; all refused for CUDA → `failed`, `cuda_version_incompatible`;
   no candidate at all → `failed`, `no_matching_product` when Novita sells nothing that
   matches (name/id, billing mode), else `no_capacity`.
3. A create that lands after the client deleted the instance is deleted at Novita at once.

Every status change goes through `change_status`; env values and credentials never reach
an event or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.backoff import backoff_seconds
from service.clock import Clock
from service.db import claims
from service.db import repository as repo
from service.db.engine import Database
from service.domain import EventSource, Instance, Status
from service.novita import (
    BreakerState,
    CreateInstanceRequest,
    EnvVar,
    NetworkStorageMount,
    NovitaCapacityError,
    NovitaCircuitOpenError,
    NovitaClient,
    NovitaCudaIncompatibleError,
    NovitaError,
    NovitaNotFoundError,
    NovitaProtocolError,
    NovitaRateLimitedError,
    NovitaUnavailableError,
    Tool,
)
from service.novita import Instance as ProviderInstance
from service.provisioning.catalogue import CapacityBlocks, CatalogueCache, ProvisioningCaches
from service.provisioning.naming import id_marker, instance_id_from_provider_name, provider_name
from service.provisioning.preflight import look_up, problems
from service.provisioning.selection import (
    Candidate,
    SelectionRequest,
    any_product_matches,
    price_per_gpu_hour,
    select_candidates,
)
from service.provisioning.status_map import stored_provider_status
from service.provisioning.templates import LaunchSpec, TemplateCache, merge_template
from service.resources import Resources
from service.settings import Settings
from service.workers.loop import Figures, WorkerLoop

log = structlog.get_logger(__name__)

# Novita statuses of an instance on its way out: not one to adopt.
_GOING = frozenset({"toRemove", "removing", "removed"})

TEMPLATE_NOT_FOUND = "template_not_found"
CREATE_REJECTED = "create_rejected"
NO_CAPACITY = "no_capacity"
CUDA_INCOMPATIBLE = "cuda_version_incompatible"
NO_MATCHING_PRODUCT = "no_matching_product"
NO_IMAGE = "no_image"
PROVIDER_ID_CONFLICT = "provider_id_conflict"
INVALID_REQUEST = "invalid_request"
NETWORK_STORAGE_NOT_FOUND = "network_storage_not_found"
NETWORK_STORAGES_APART = "network_storages_apart"


class _Settled(Exception):
    """This instance is finished with for this batch (its outcome is already written)."""


@dataclass(frozen=True, slots=True)
class ProvisionerConfig:
    claim_ttl: float = 60.0
    batch_size: int = 10
    create_settle: float = 60.0
    backoff_base: float = 5.0
    backoff_max: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ProvisionerConfig:
        return cls(
            claim_ttl=settings.claim_ttl_seconds,
            batch_size=settings.provisioner_batch_size,
            create_settle=settings.create_settle_seconds,
            backoff_base=settings.poll_interval_transitional,
            backoff_max=settings.poll_error_max_backoff,
        )


class Provisioner:
    name = "provisioner"

    def __init__(
        self,
        *,
        database: Database,
        novita: NovitaClient,
        clock: Clock,
        owner: str,
        config: ProvisionerConfig | None = None,
        catalogue: CatalogueCache | None = None,
        templates: TemplateCache | None = None,
        blocks: CapacityBlocks | None = None,
    ) -> None:
        if not owner:
            raise ValueError("a provisioner needs an owner id for its claims")
        self._db = database
        self._novita = novita
        self._clock = clock
        self.owner = owner
        self.config = config or ProvisionerConfig()
        self.catalogue = catalogue or CatalogueCache(novita, clock, ttl=30.0)
        self.templates = templates or TemplateCache(novita, clock, ttl=300.0)
        self.blocks = blocks or CapacityBlocks(clock, ttl=300.0)
        self._caches = ProvisioningCaches(self.catalogue, self.templates, self.blocks)
        self.paused = False  # True while the breaker is open: shown by /health

    @classmethod
    def from_resources(cls, resources: Resources) -> Provisioner:
        s = resources.settings
        return cls(
            database=resources.database,
            novita=resources.novita,
            clock=resources.clock,
            owner=resources.owner,
            config=ProvisionerConfig.from_settings(s),
            catalogue=resources.caches.catalogue,
            templates=resources.caches.templates,
            blocks=resources.caches.blocks,
        )

    def figures(self, now: datetime) -> Figures:
        return {"paused": self.paused}

    async def run_once(self) -> int:
        if self._novita.breaker.state is BreakerState.OPEN:
            if not self.paused:
                log.warning("provision.paused", reason="novita circuit open")
            self.paused = True
            return 0
        if self.paused:
            log.info("provision.resumed")
        self.paused = False
        async with self._db.transaction() as conn:
            claimed = await claims.claim_pending(
                conn,
                owner=self.owner,
                now=self._clock.now(),
                ttl=self.config.claim_ttl,
                limit=self.config.batch_size,
            )
        for instance in claimed:
            await self._handle(instance)
        return len(claimed)

    # -- one instance ---------------------------------------------------------------------

    async def _handle(self, instance: Instance) -> None:
        try:
            if instance.status is Status.DELETING:
                await self._resolve_cancelled(instance)
            else:
                await self._provision(instance)
        except _Settled:
            pass
        except (NovitaUnavailableError, NovitaRateLimitedError, NovitaProtocolError) as error:
            # Novita cannot answer now; nothing here was a create, so retrying is safe.
            await self._defer(instance, error)
        except NovitaError as error:
            # A refused read (e.g. the API key): not this instance's fault; keep it pending.
            log.error("provision.read_refused", instance_id=instance.id, error=error.code)
            await self._defer(instance, error)
        except Exception:
            log.exception("provision.unexpected_error", instance_id=instance.id)
            await self._defer(instance, None)

    async def _provision(self, instance: Instance) -> None:
        if instance.submitted_at is not None:
            await self._look_before_creating(instance, instance.submitted_at)
        launch = await self._launch_spec(instance)
        storage_clusters = await self._storage_clusters(instance, instance.launch or {})
        request = SelectionRequest.for_instance(instance, launch.rootfs_size, storage_clusters)
        view = await look_up(request, None, self._caches)  # (the template is checked above)
        # Requests accepted while Novita could not be reached are validated here.
        invalid = problems(request, None, view)
        if invalid:
            product_fields = {"productName", "productId", "billingMode"}
            reason = (
                NO_MATCHING_PRODUCT
                if any(p["field"] in product_fields for p in invalid)
                else INVALID_REQUEST
            )
            log.warning("provision.invalid_request", instance_id=instance.id, reason=reason)
            message = "; ".join(p["message"] for p in invalid)
            await self._fail(instance, reason, {"message": message, "fields": invalid})
            return
        products, clusters = view.products, view.clusters
        candidates = select_candidates(request, products, clusters, blocked=self.blocks.active())
        if not candidates:
            reason = NO_CAPACITY if any_product_matches(request, products) else NO_MATCHING_PRODUCT
            log.warning("provision.no_candidate", instance_id=instance.id, reason=reason)
            message = _no_candidate_message(reason, request)
            await self._fail(instance, reason, {"message": message})
            return
        attempts: list[dict[str, Any]] = []
        incompatible: set[str] = set()  # product ids Novita refused for their CUDA version
        for candidate in candidates:
            if candidate.product.id not in incompatible:
                await self._create_at(instance, launch, candidate, attempts, incompatible)
        cuda_only = bool(attempts) and all(
            a.get("reason") == CUDA_INCOMPATIBLE.upper() for a in attempts
        )
        reason = CUDA_INCOMPATIBLE if cuda_only else NO_CAPACITY
        log.warning("provision.candidates_exhausted", instance_id=instance.id,
                    tried=len(attempts), reason=reason)
        await self._fail(instance, reason, {"attempts": attempts})

    async def _storage_clusters(
        self, instance: Instance, options: Mapping[str, Any]
    ) -> tuple[str, ...]:
        """The cluster the network storages to mount live in (they must share one)."""
        wanted = [str(m["id"]) for m in options.get("networkStorages", [])]
        if not wanted:
            return ()
        known = {n.storage_id: n for n in await self.catalogue.network_storages()}
        missing = [storage_id for storage_id in wanted if storage_id not in known]
        if missing:
            await self._fail(instance, NETWORK_STORAGE_NOT_FOUND, {"networkStorages": missing})
            raise _Settled
        clusters = sorted({known[storage_id].cluster_id for storage_id in wanted})
        if len(clusters) > 1:
            await self._fail(
                instance,
                NETWORK_STORAGES_APART,
                {"message": "the network storages are in different clusters",
                 "clusterIds": clusters},
            )
            raise _Settled
        return tuple(clusters)

    async def _look_before_creating(self, instance: Instance, submitted_at: datetime) -> None:
        """Adopt an instance an earlier create made; else wait out the settle window."""
        if await self._adopt_if_found(instance):
            raise _Settled
        settle_until = submitted_at + timedelta(seconds=self.config.create_settle)
        if self._clock.now() < settle_until:
            log.info("provision.awaiting_settle", instance_id=instance.id)
            await self._release(instance, settle_until)
            raise _Settled

    async def _launch_spec(self, instance: Instance) -> LaunchSpec:
        template = None
        if instance.template_id:
            try:
                template = await self.templates.get(instance.template_id)
            except NovitaNotFoundError:
                log.warning(
                    "provision.template_not_found",
                    instance_id=instance.id,
                    template_id=instance.template_id,
                )
                await self._fail(instance, TEMPLATE_NOT_FOUND, {"templateId": instance.template_id})
                raise _Settled from None
        launch = merge_template(
            template,
            image_url=instance.image_url,
            image_auth_id=instance.image_auth_id,
            ports=instance.ports,
            envs=instance.envs,
            rootfs_size=instance.rootfs_size,
        )
        if not launch.image_url:
            await self._fail(
                instance,
                NO_IMAGE,
                {"message": "neither the request nor the template names an image"},
            )
            raise _Settled
        return launch

    async def _create_at(
        self,
        instance: Instance,
        launch: LaunchSpec,
        candidate: Candidate,
        attempts: list[dict[str, Any]],
        incompatible: set[str],
    ) -> None:
        """Try one candidate; return only if the next one may do better (no capacity here,
        or a product whose CUDA is too old); raise `_Settled` otherwise."""
        if not await self._record_intent(instance):
            log.warning("provision.claim_lost", instance_id=instance.id)
            raise _Settled
        where = {
            "region": candidate.region,
            "clusterId": candidate.cluster_id,
            "productId": candidate.product.id,
            "productName": candidate.product.name,  # reports group capacity errors by it
        }
        try:
            novita_id = await self._novita.create_instance(
                build_create_request(instance, launch, candidate)
            )
        except NovitaCapacityError as error:
            self.blocks.block(candidate.region, candidate.product.id)
            log.info("provision.capacity_unavailable", instance_id=instance.id, **where)
            attempts.append({**where, **_error_detail(error)})
            return
        except NovitaCudaIncompatibleError as error:
            incompatible.add(candidate.product.id)
            log.info("provision.cuda_incompatible", instance_id=instance.id, **where)
            attempts.append({**where, **_error_detail(error)})
            return
        except (NovitaCircuitOpenError, NovitaRateLimitedError) as error:
            # Refused before Novita did anything: no instance was made.
            await self._defer(instance, error)
            raise _Settled from None
        except (NovitaUnavailableError, NovitaProtocolError) as error:
            # The create may have happened. Never create blindly again: look first.
            log.warning(
                "provision.create_ambiguous", instance_id=instance.id, error=error.code, **where
            )
            await self._look_before_creating(instance, self._clock.now())
            raise _Settled from None  # (the look always settles: the submit was just now)
        except NovitaError as error:
            log.warning(
                "provision.create_rejected", instance_id=instance.id, error=error.code, **where
            )
            await self._fail(instance, CREATE_REJECTED, {**where, **_error_detail(error)})
            raise _Settled from None
        await self._record_created(instance, launch, candidate, novita_id, attempts)
        raise _Settled

    # -- recording outcomes ---------------------------------------------------------------

    async def _record_intent(self, instance: Instance) -> bool:
        async with self._db.transaction() as conn:
            return await claims.record_intent(
                conn,
                instance.id,
                owner=self.owner,
                now=self._clock.now(),
                ttl=self.config.claim_ttl,
            )

    async def _record_created(
        self,
        instance: Instance,
        launch: LaunchSpec,
        candidate: Candidate,
        novita_id: str,
        attempts: list[dict[str, Any]],
    ) -> None:
        now = self._clock.now()
        facts = {
            "novita_instance_id": novita_id,
            "region": candidate.region,
            "product_id": candidate.product.id,
            "product_name": candidate.product.name,
            "price_per_hour": price_per_gpu_hour(candidate.price, instance.billing_mode),
            "image_url": launch.image_url,
            "rootfs_size": candidate.rootfs_size,
        }
        detail = {
            "novitaInstanceId": novita_id,
            "region": candidate.region,
            "clusterId": candidate.cluster_id,
            "productId": candidate.product.id,
            "pricePerHour": str(facts["price_per_hour"]),
            "capacityAttempts": attempts,
        }
        recorded = await self._commit_provisioning(instance, novita_id, facts, detail, None, now)
        if recorded:
            log.info(
                "provision.created",
                instance_id=instance.id,
                novita_instance_id=novita_id,
                region=candidate.region,
                product_id=candidate.product.id,
            )

    async def _commit_provisioning(
        self,
        instance: Instance,
        novita_id: str,
        facts: Mapping[str, Any],
        detail: Mapping[str, Any],
        provider_status: str | None,
        now: datetime,
        *,
        kind: str = "submitted",
    ) -> bool:
        """Record a Novita instance made for this row; delete it at Novita if unwanted now.

        False when the row no longer wants it (deleted meanwhile, or already has another).
        """
        delete_at_novita = False
        try:
            async with self._db.transaction() as conn:
                current = await repo.get_instance(conn, instance.id, for_update=True)
                holder = await _holder(conn, novita_id, instance.id)
                if holder is None:
                    delete_at_novita = await self._record(
                        conn, current, novita_id, facts, detail, provider_status, now, kind
                    )
        except IntegrityError:
            # Another row took this Novita id between our check and our write.
            async with self._db.read() as conn:
                holder = await _holder(conn, novita_id, instance.id)
            if holder is None:
                raise
        if holder is not None:
            await self._provider_id_conflict(current, novita_id, holder)
            return False
        if delete_at_novita:
            await self._delete_unwanted(instance.id, novita_id, current.status)
            return False
        return current.status is Status.PENDING

    async def _record(
        self,
        conn: AsyncConnection,
        current: Instance,
        novita_id: str,
        facts: Mapping[str, Any],
        detail: Mapping[str, Any],
        provider_status: str | None,
        now: datetime,
        kind: str,
    ) -> bool:
        """Write what `_commit_provisioning` decided (`current` is the row it locked in
        `conn`); True when Novita's instance is unwanted."""
        delete_at_novita = False
        if current.status is Status.PENDING:
            await repo.change_status(
                conn,
                current.id,
                Status.PROVISIONING,
                source=EventSource.PROVISIONER,
                now=now,
                kind=kind,
                provider_status=provider_status,
                observed_at=now if provider_status else None,
                detail=detail,
                changes={**facts, "submitted_at": current.submitted_at or now},
                locked=current,
            )
            await claims.release(conn, current.id, owner=self.owner, failed_attempts=0)
        elif current.status is Status.DELETING and current.novita_instance_id is None:
            # Deleted by the client while the create was in flight: keep the id so the
            # reconciler can confirm the delete, and delete it.
            await repo.change_status(
                conn,
                current.id,
                Status.DELETING,
                source=EventSource.PROVISIONER,
                now=now,
                provider_status=provider_status,
                changes={"novita_instance_id": novita_id, "next_check_at": now},
                locked=current,
            )
            await claims.release(conn, current.id, owner=self.owner, failed_attempts=0)
            delete_at_novita = True
        elif current.novita_instance_id != novita_id:
            delete_at_novita = True  # the row is gone or has another instance: an orphan
        return delete_at_novita

    async def _provider_id_conflict(
        self, instance: Instance, novita_id: str, holder: Instance
    ) -> None:
        """Novita gave this row an id another row already holds (a provider whose world was
        reset, e.g. a simulator restarted empty): fail this row at once, with the reason,
        instead of retrying a write that can never succeed. The Novita instance carries this
        row's name, so nobody could track it: it is deleted, unless the holder is live (a
        delete never acts on an id a live row owns)."""
        holder_live = not holder.is_terminal
        log.error(
            "provision.provider_id_conflict",
            instance_id=instance.id,
            novita_instance_id=novita_id,
            held_by=holder.id,
            held_by_status=holder.status.value,
        )
        await self._fail(
            instance,
            PROVIDER_ID_CONFLICT,
            {
                "novitaInstanceId": novita_id,
                "heldBy": holder.id,
                "heldByStatus": holder.status.value,
                "message": f"Novita answered with instance id {novita_id}, which instance "
                f"{holder.id} ({holder.status.value}) already holds; the provider's ids were "
                "reused (was its world reset?)",
                "providerInstance": "left to the holder" if holder_live else "deleted",
            },
        )
        if not holder_live:
            await self._delete_unwanted(instance.id, novita_id, instance.status)

    async def _delete_unwanted(self, instance_id: str, novita_id: str, status: Status) -> None:
        try:
            await self._novita.delete_instance(novita_id)
        except NovitaNotFoundError:
            pass
        except NovitaError as error:
            # The relist (a later issue) finds it by its name and deletes it then.
            log.error(
                "provision.orphan_delete_failed",
                instance_id=instance_id,
                novita_instance_id=novita_id,
                error=error.code,
            )
            return
        log.warning(
            "provision.orphan_deleted",
            instance_id=instance_id,
            novita_instance_id=novita_id,
            row_status=status.value,
        )

    async def _fail(self, instance: Instance, reason: str, detail: Mapping[str, Any]) -> None:
        async with self._db.transaction() as conn:
            current = await repo.get_instance(conn, instance.id, for_update=True)
            if current.status is not Status.PENDING or current.claim_owner != self.owner:
                log.info("provision.outcome_dropped", instance_id=instance.id, reason=reason)
                return
            await repo.change_status(
                conn,
                instance.id,
                Status.FAILED,
                source=EventSource.PROVISIONER,
                now=self._clock.now(),
                reason=reason,
                detail=detail,
                locked=current,
            )
        log.warning("provision.failed", instance_id=instance.id, reason=reason)

    async def _defer(self, instance: Instance, error: NovitaError | None) -> None:
        """Leave the row as it is, due again after a growing backoff. The deferrals in a
        row are counted on the row (`failed_attempts`, as the claim read it), so a restart
        or another process carries on with the same backoff."""
        failures = instance.failed_attempts + 1
        delay = backoff_seconds(
            failures,
            base=self.config.backoff_base,
            cap=self.config.backoff_max,
            retry_after=error.retry_after if error is not None else None,
        )
        log.info(
            "provision.deferred",
            instance_id=instance.id,
            error=error.code if error else None,
            deferrals=failures,
            retry_in=delay,
        )
        await self._release(
            instance, self._clock.now() + timedelta(seconds=delay), failed_attempts=failures
        )

    async def _release(
        self, instance: Instance, next_check_at: datetime, *, failed_attempts: int | None = None
    ) -> None:
        async with self._db.transaction() as conn:
            await claims.release(
                conn,
                instance.id,
                owner=self.owner,
                next_check_at=next_check_at,
                failed_attempts=failed_attempts,
            )

    # -- finding what an earlier create made ---------------------------------------------

    async def _find(self, instance: Instance) -> list[ProviderInstance]:
        """Novita instances whose name carries this instance's id, oldest first."""
        found = await self._novita.find_instances_named(
            id_marker(instance.id),
            lambda item: instance_id_from_provider_name(item.name) == instance.id
            and item.status not in _GOING,
        )
        return sorted(found, key=lambda item: (item.created_at is None, item.created_at, item.id))

    async def _adopt_if_found(self, instance: Instance) -> bool:
        found = await self._find(instance)
        if not found:
            return False
        keep, extra = found[0], found[1:]
        for duplicate in extra:  # cannot happen through us; still, never leave one billing
            await self._delete_unwanted(instance.id, duplicate.id, instance.status)
        now = self._clock.now()
        facts = await self._facts_of(keep, instance.billing_mode)
        detail = {"adopted": True, "novitaInstanceId": keep.id, "region": facts.get("region")}
        recorded = await self._commit_provisioning(
            instance,
            keep.id,
            facts,
            detail,
            stored_provider_status(keep.status),
            now,
            kind="adopted",
        )
        if recorded:
            log.info(
                "provision.adopted",
                instance_id=instance.id,
                novita_instance_id=keep.id,
                provider_status=keep.status,
            )
        return True

    async def _facts_of(self, found: ProviderInstance, billing_mode: str) -> dict[str, Any]:
        """What we record about an adopted instance; the catalogue fills in region and price."""
        facts: dict[str, Any] = {
            "novita_instance_id": found.id,
            "product_id": found.product_id,
            "product_name": found.product_name,
            "region": found.cluster_name,
        }
        if found.image_url:
            facts["image_url"] = found.image_url
        if found.rootfs_size:
            facts["rootfs_size"] = found.rootfs_size
        try:
            clusters = await self.catalogue.clusters()
            products = await self.catalogue.products(billing_mode)
        except NovitaError:
            return facts  # adopting matters more than the price; the rest can stay unknown
        cluster = next((c for c in clusters if c.id == found.cluster_id), None)
        if cluster is not None and cluster.name:
            facts["region"] = cluster.name
        product = next((p for p in products if p.id == found.product_id), None)
        price = product.price_for(billing_mode) if product else None
        if price is not None:
            facts["price_per_hour"] = price_per_gpu_hour(price, billing_mode)
        if product is not None and not facts["product_name"]:
            facts["product_name"] = product.name
        return facts

    async def _resolve_cancelled(self, instance: Instance) -> None:
        """A row deleted while its create was in flight: find what was made and delete it."""
        if await self._adopt_if_found(instance):
            return
        assert instance.submitted_at is not None  # claim_pending only returns such rows
        settle_until = instance.submitted_at + timedelta(seconds=self.config.create_settle)
        if self._clock.now() < settle_until:
            await self._release(instance, settle_until)
            return
        async with self._db.transaction() as conn:
            current = await repo.get_instance(conn, instance.id, for_update=True)
            if current.status is Status.DELETING and current.novita_instance_id is None:
                await repo.change_status(
                    conn,
                    instance.id,
                    Status.DELETED,
                    source=EventSource.PROVISIONER,
                    now=self._clock.now(),
                    detail={"message": "no Novita instance was created"},
                    locked=current,
                )


async def _holder(conn: AsyncConnection, novita_id: str, instance_id: str) -> Instance | None:
    """Another row that already holds `novita_id`, if any."""
    held = await repo.ids_by_novita_id(conn, [novita_id])
    holder_id = held.get(novita_id)
    if holder_id is None or holder_id == instance_id:
        return None
    return await repo.get_instance(conn, holder_id)


def build_create_request(
    instance: Instance, launch: LaunchSpec, candidate: Candidate
) -> CreateInstanceRequest:
    """The create body: the template merged with the request; the request's own create
    options (kind, tools, network storages, command, entrypoint, minCudaVersion) win."""
    assert launch.image_url is not None
    options = instance.launch or {}
    gpu = options.get("kind", "gpu") == "gpu"
    return CreateInstanceRequest(
        name=provider_name(instance.id, instance.name),
        product_id=candidate.product.id,
        gpu_num=instance.gpu_num if gpu else None,  # CPU instances take neither
        rootfs_size=candidate.rootfs_size if gpu else None,
        image_url=launch.image_url,
        image_auth_id=launch.image_auth_id or None,
        ports=[(int(p["port"]), str(p["type"])) for p in launch.ports] or None,
        envs=tuple(EnvVar(key=e["key"], value=e["value"]) for e in launch.envs),
        tools=tuple(
            Tool(name=t["name"], port=str(t["port"]), type=t["type"])
            for t in options.get("tools", [])
        ),
        network_storages=tuple(
            NetworkStorageMount(id=m["id"], mount_point=m["mountPoint"])
            for m in options.get("networkStorages", [])
        ),
        command=options.get("command") or launch.command or None,
        entrypoint=options.get("entrypoint") or launch.entrypoint or None,
        min_cuda_version=options.get("minCudaVersion") or launch.min_cuda_version or None,
        cluster_id=candidate.cluster_id,
        kind="gpu" if gpu else "cpu",
        billing_mode=instance.billing_mode,
        month=1 if instance.billing_mode == "monthly" else None,
    )


def _error_detail(error: NovitaError) -> dict[str, Any]:
    """What an event may say about a Novita refusal (messages are already redacted)."""
    return {"code": error.code, "reason": error.reason, "message": error.message}


def _no_candidate_message(reason: str, request: SelectionRequest) -> str:
    if reason == NO_MATCHING_PRODUCT:
        what = (
            f"with id {request.product_id!r}"
            if request.product_id
            else f"named {request.product_name!r}"
        )
        return f"Novita offers no product {what} with billing mode {request.billing_mode!r}"
    return (
        f"no region has a deployable {request.product_id or request.product_name!r} "
        f"({request.billing_mode}, {request.gpu_num} GPU) that fits the request right now"
    )


def build_provisioner_loop(resources: Resources) -> WorkerLoop:
    return WorkerLoop(Provisioner.from_resources(resources), idle_interval=1.0)
