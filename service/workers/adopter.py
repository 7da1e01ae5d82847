"""Adopting an orphan: a provider instance whose name carries one of our ids, with no row.

Only the relist finds these (the provisioner adopts what its own creates made, by name).
The row is recorded under the id in the name, from what Novita reports
(`service.provisioning.adoption`), with the usual events and outbox rows.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from service.clock import Clock
from service.db import repository as repo
from service.db.engine import Database
from service.domain import Status, TransitionResult
from service.novita import Instance as ProviderInstance
from service.provisioning.adoption import GOING, adopted_facts, adopted_spec, adoption_path
from service.provisioning.status_map import map_provider_status, stored_provider_status
from service.workers.observe import observation_detail, observation_of, port_mappings_of

log = structlog.get_logger(__name__)


async def adopt(
    database: Database,
    clock: Clock,
    instance_id: str,
    observed: ProviderInstance,
    observed_at: datetime,
) -> TransitionResult | None:
    """Record `observed` as our instance `instance_id`; None if it is on its way out or a row
    for it appeared meanwhile."""
    if observed.status in GOING:
        return None  # being deleted: nothing to track
    now = clock.now()
    observation = observation_of(observed)
    async with database.transaction() as conn:
        result = await repo.insert_adopted_instance(
            conn,
            instance_id,
            adopted_spec(observed, instance_id),
            path=adoption_path(observation),
            now=now,
            facts=adopted_facts(observed, port_mappings_of(observed), now),
            provider_status=stored_provider_status(observed.status),
            observed_at=observed_at,
            detail={**observation_detail(observed, observation), "novitaInstanceId": observed.id},
            reason=map_provider_status(Status.PROVISIONING, observation).reason,
        )
    if result is not None:
        log.warning(
            "reconcile.instance_adopted",
            instance_id=instance_id,
            novita_instance_id=observed.id,
            provider_status=observed.status,
            status=result.instance.status.value,
        )
    return result
