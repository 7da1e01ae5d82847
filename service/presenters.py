"""How domain objects look from outside: the JSON shape used by the REST API and notifications.

Environment variable values are never shown (they often carry tokens): only their keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.domain import Instance, InstanceEvent


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def instance_view(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "name": instance.name,
        "team": instance.team,
        "status": instance.status.value,
        "statusReason": instance.status_reason,
        "providerStatus": instance.provider_status,
        "novitaInstanceId": instance.novita_instance_id,
        "productId": instance.product_id,
        "productName": instance.product_name,
        "region": instance.region,
        "preferredRegion": instance.preferred_region,
        "regions": list(instance.regions),
        "gpuNum": instance.gpu_num,
        "rootfsSize": instance.rootfs_size,
        "billingMode": instance.billing_mode,
        "pricePerHour": str(instance.price_per_hour)
        if instance.price_per_hour is not None
        else None,
        "templateId": instance.template_id,
        "imageUrl": instance.image_url,
        "imageAuthId": instance.image_auth_id,
        "ports": list(instance.ports),
        "envKeys": [env["key"] for env in instance.envs],
        "webhookUrl": instance.webhook_url,
        "labels": dict(instance.labels),
        "readiness": instance.readiness,
        "autoStop": instance.auto_stop,
        "onInterruption": instance.interruption_policy,
        "replacesInstanceId": instance.replaces_instance_id,
        "replacedByInstanceId": instance.replaced_by_instance_id,
        "portMappings": list(instance.port_mappings),
        **launch_view(instance.launch),
        "createdAt": iso(instance.created_at),
        "updatedAt": iso(instance.updated_at),
        "submittedAt": iso(instance.submitted_at),
        "runningAt": iso(instance.running_at),
        "readyAt": iso(instance.ready_at),
        "stoppedAt": iso(instance.stopped_at),
        "deletedAt": iso(instance.deleted_at),
        "lastUsedAt": iso(instance.last_used_at),
        "sequence": instance.event_seq,
    }


def launch_view(launch: dict[str, Any] | None) -> dict[str, Any]:
    """The create options passed to Novita (defaults when none were given)."""
    options = launch or {}
    return {
        "kind": options.get("kind", "gpu"),
        "tools": list(options.get("tools", [])),
        "networkStorages": list(options.get("networkStorages", [])),
        "command": options.get("command"),
        "entrypoint": options.get("entrypoint"),
        "minCudaVersion": options.get("minCudaVersion"),
    }


def event_view(event: InstanceEvent) -> dict[str, Any]:
    return {
        "sequence": event.seq,
        "at": iso(event.at),
        "source": event.source.value,
        "kind": event.kind,
        "fromStatus": event.from_status.value if event.from_status else None,
        "toStatus": event.to_status.value if event.to_status else None,
        "providerStatus": event.provider_status,
        "reason": event.reason,
        "detail": event.detail,
    }
