"""What we record about a provider instance that carries our id but has no row (an orphan
the relist adopts): pure functions from the provider's view to a spec, facts and a path.

The client's request is lost with the row, so only what Novita tells us is recorded: the
name (without our id suffix), product, cluster, GPU count, billing mode, image, disk and
port mappings. The label `adopted=true` lets operators find such instances.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.domain import InstanceSpec, Status
from service.novita import Instance as ProviderInstance
from service.provisioning.status_map import Observation, map_provider_status, transition_path

BILLING_MODES = frozenset({"onDemand", "spot", "monthly"})
# Novita statuses of an instance on its way out: nothing to adopt.
GOING = frozenset({"toRemove", "removing", "removed"})
ADOPTED_LABEL = ("adopted", "true")
_MAX_NAME = 100


def adopted_name(provider_name: str, instance_id: str) -> str:
    """The client-facing part of the provider name (our id suffix removed)."""
    suffix = "inst-" + instance_id.removeprefix("inst_")
    name = provider_name.strip()
    if name.lower().endswith(suffix):
        name = name[: -len(suffix)].rstrip("-")
    return (name or provider_name or instance_id)[:_MAX_NAME]


def adopted_spec(observed: ProviderInstance, instance_id: str) -> InstanceSpec:
    gpu_num = observed.gpu_num if observed.gpu_num and 1 <= observed.gpu_num <= 8 else 1
    billing = observed.billing_mode if observed.billing_mode in BILLING_MODES else "onDemand"
    return InstanceSpec(
        name=adopted_name(observed.name, instance_id),
        gpu_num=gpu_num,
        rootfs_size=observed.rootfs_size,
        billing_mode=billing or "onDemand",
        product_name=observed.product_name,
        product_id=observed.product_id,
        template_id=observed.template_id,
        image_url=observed.image_url,
        image_auth_id=observed.image_auth_id,
        region=observed.cluster_name or observed.cluster_id,
        labels=dict([ADOPTED_LABEL]),
    )


def adopted_facts(
    observed: ProviderInstance, port_mappings: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """Columns set with the `adopted` step (see `repository.CHANGEABLE_COLUMNS`)."""
    return {
        "novita_instance_id": observed.id,
        "product_id": observed.product_id,
        "product_name": observed.product_name,
        "region": observed.cluster_name or observed.cluster_id,
        "port_mappings": port_mappings,
        "submitted_at": observed.created_at or now,
    }


def adoption_path(observation: Observation) -> tuple[Status, ...]:
    """The legal steps from `provisioning` to what Novita reports; an instance that never
    ran in our records starts there. Where no legal path leads (e.g. Novita says stopping)
    it stays `provisioning` and the next poll moves it on."""
    target = map_provider_status(Status.PROVISIONING, observation).target
    if target is None or target is Status.PROVISIONING:
        return (Status.PROVISIONING,)
    return (Status.PROVISIONING, *transition_path(Status.PROVISIONING, target))
