"""Instances as Novita shows them (docs/novita-facts.md): camelCase, numbers as strings,
`""` for null, Unix seconds as strings, endpoints only while `running`."""

from __future__ import annotations

from typing import Any

from service.simulator.machine import SimInstance

FREE_STORAGE_GB = 60
KEEP_DATA_DAYS = 15
LOCAL_STORAGE_PRICE = 500  # 1/100,000 USD per GB per day
EXITED_LOCAL_STORAGE_PRICE = 700
MONTH_SECONDS = 30 * 24 * 3600


def _ts(value: float | None) -> str:
    return "" if value is None or value <= 0 else str(int(value))


def _end_time(inst: SimInstance) -> str:
    if inst.billing_mode != "monthly":
        return "-1"
    return str(int(inst.created_at) + max(inst.month, 1) * MONTH_SECONDS)


def _volume_mounts(inst: SimInstance, *, size_as_string: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    if inst.local_storage:
        size: int | str = str(inst.local_storage) if size_as_string else inst.local_storage
        mounts.append({"type": "local", "size": size, "id": "", "mountPath": "/workspace"})
    for storage_id, mount_point in inst.network_storages:
        size = "0" if size_as_string else 0
        mounts.append({"type": "network", "size": size, "id": storage_id, "mountPath": mount_point})
    return mounts


def _port_mappings(inst: SimInstance) -> list[dict[str, Any]]:
    if inst.status != "running":
        return []
    return [{"port": m.port, "endpoint": m.endpoint, "type": m.type} for m in inst.mappings]


def _ssh(inst: SimInstance) -> tuple[str, bool]:
    for m in inst.mappings:
        if m.type == "tcp" and m.port == 22 and inst.status == "running":
            host, _, port = m.endpoint.rpartition(":")
            return f"ssh -p {port} root@{host}", inst.app_up
    return "", False


def _status_error(inst: SimInstance) -> dict[str, str]:
    state, message = inst.status_error or ("", "")
    return {"state": state, "message": message}


def _use_time(inst: SimInstance) -> int:
    # Approximation: only whole finished runs are counted; good enough for a fake.
    return int(inst.use_time)


def render_instance(inst: SimInstance) -> dict[str, Any]:
    """The body of `GET /gpu/instance?instanceId=` (unwrapped)."""
    ssh_command, ssh_up = _ssh(inst)
    jupyter = next(
        (m for m in inst.mappings if m.port == 8888 and m.type == "http"), None
    ) if inst.status == "running" else None
    return {
        "id": inst.id,
        "name": inst.name,
        "clusterId": inst.cluster_id,
        "clusterName": inst.cluster_name,
        "status": inst.status,
        "statusError": _status_error(inst),
        "imageUrl": inst.image_url,
        "imageAuthId": inst.image_auth_id,
        "command": inst.command,
        "entrypoint": inst.entrypoint,
        "cpuNum": str(inst.cpu_num),
        "memory": str(inst.memory),
        "gpuNum": str(inst.gpu_num),
        "network": {"id": inst.network_id, "ip": ""},
        "portMappings": _port_mappings(inst),
        "volumeMounts": _volume_mounts(inst, size_as_string=False),
        "node": {"maxRootfsSize": 6144, "maxLocalVolumeSize": 2048},
        "jobs": [],
        "envs": [dict(env) for env in inst.envs],
        "connectComponentSSH": {
            "sshCommand": ssh_command, "password": inst.ssh_password, "isRunning": ssh_up,
        },
        "connectComponentWebTerminal": {
            "address": "", "username": "root", "password": inst.ssh_password, "isRunning": False,
        },
        "connectComponentJupyter": {
            "port": 8888 if jupyter else 0,
            "address": jupyter.endpoint if jupyter else "",
            "isRunning": bool(jupyter) and inst.app_up,
        },
        "connectComponentLog": {
            "systemLogAddress": "", "instanceLogAddress": "", "isRunning": False,
        },
        "kind": inst.kind,
        "billingMode": inst.billing_mode,
        "endTime": _end_time(inst),
        "freeStorageSize": FREE_STORAGE_GB,
        "keepDataDay": KEEP_DATA_DAYS,
        # Extras (§5.6): emitted for realism; clients must not require them.
        "productId": inst.product_id,
        "productName": inst.product_name,
        "rootfsSize": inst.rootfs_size,
        "sshCommand": ssh_command,
        "sshPassword": inst.ssh_password,
        "createdAt": _ts(inst.created_at),
        "lastStartedAt": _ts(inst.last_started_at),
        "lastStoppedAt": _ts(inst.last_stopped_at),
        "startedAt": _ts(inst.last_started_at),
        "stoppedAt": _ts(inst.last_stopped_at),
        "useTime": _use_time(inst),
        "tools": list(inst.tools),
        "diskSize": inst.local_storage,
        "instancePrice": str(inst.price * max(inst.gpu_num, 1)),
        "localStoragePrice": str(LOCAL_STORAGE_PRICE),
        "exitedLocalStoragePrice": str(EXITED_LOCAL_STORAGE_PRICE),
        "spotStatus": inst.spot_status,
        "spotReclaimTime": str(int(inst.spot_reclaim_time)),
        "gpuIds": list(range(inst.gpu_num)) if inst.status == "running" else [],
        "templateId": inst.template_id,
        "releaseDataAt": _release_at(inst),
        "version": "v1",
    }


def _release_at(inst: SimInstance) -> str:
    if inst.status != "exited" or inst.last_stopped_at is None:
        return ""
    return str(int(inst.last_stopped_at) + KEEP_DATA_DAYS * 24 * 3600)


def render_list_item(inst: SimInstance) -> dict[str, Any]:
    """An item of `GET /gpu/instances`: a subset of get, volume sizes as strings (§5.7)."""
    return {
        "id": inst.id,
        "name": inst.name,
        "clusterId": inst.cluster_id,
        "clusterName": inst.cluster_name,
        "status": inst.status,
        "imageUrl": inst.image_url,
        "imageAuthId": inst.image_auth_id,
        "command": inst.command,
        "entrypoint": inst.entrypoint,
        "cpuNum": str(inst.cpu_num),
        "memory": str(inst.memory),
        "gpuNum": str(inst.gpu_num),
        "portMappings": _port_mappings(inst),
        "productId": inst.product_id,
        "productName": inst.product_name,
        "rootfsSize": inst.rootfs_size,
        "volumeMounts": _volume_mounts(inst, size_as_string=True),
        "statusError": _status_error(inst),
        "envs": [dict(env) for env in inst.envs],
        "kind": inst.kind,
        "billingMode": inst.billing_mode,
        "endTime": _end_time(inst),
        "spotStatus": inst.spot_status,
        "spotReclaimTime": str(int(inst.spot_reclaim_time)),
        "sshPassword": inst.ssh_password,
        "createdAt": _ts(inst.created_at),
    }
