"""`/api/instances`: HTTP in, JSON out. The rules live in `service.lifecycle`."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response

from service.api.access import lifecycle_for, principal_of
from service.api.bodies import parse_json_object, read_body, validate
from service.api.policies import patch_policies
from service.api.query_params import Query
from service.api.responses import JSONResponse
from service.api.routing import route
from service.api.schemas import CreateInstanceBody, LastUsedBody
from service.auth.roles import MAX_TEAM, NO_TEAM, TEAM_RULE, Role, valid_team
from service.cursors import encode_position
from service.db import repository as repo
from service.domain import Instance, InstanceSpec, Status
from service.errors import (
    InstanceNotFoundError,
    UnresolvableHostError,
    ValidationFailedError,
    WebhookTargetRefusedError,
)
from service.lifecycle import Lifecycle
from service.notifications.ssrf import check_webhook_target
from service.presenters import event_view, instance_view
from service.resources import Resources

log = structlog.get_logger(__name__)

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_IDEMPOTENCY_KEY = 255
# A heartbeat may be a little ahead of our clock (client clock skew); more is refused.
HEARTBEAT_SKEW = timedelta(seconds=30)


def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


def _lifecycle(request: Request) -> Lifecycle:
    return lifecycle_for(request)


def _team_for_create(request: Request, named: str | None) -> str:
    """The team a new instance belongs to: the key's own, or one an admin names."""
    principal = principal_of(request)
    if named is None or named == principal.team:
        return principal.team
    principal.require(Role.ADMIN)  # naming another team is an admin's business
    return named


def _invalid(field: str, message: str, value: Any = None) -> ValidationFailedError:
    entry: dict[str, Any] = {"field": field, "message": message}
    if value is not None:
        entry["value"] = value
    return ValidationFailedError([entry])


def _spec_from(body: CreateInstanceBody, team: str) -> InstanceSpec:
    return InstanceSpec(
        team=team,
        name=body.name,
        gpu_num=body.gpu_num,
        rootfs_size=body.rootfs_size,
        billing_mode=body.billing_mode,
        product_name=body.product_name,
        product_id=body.product_id,
        template_id=body.template_id,
        image_url=body.image_url,
        image_auth_id=body.image_auth_id,
        region=body.region,
        regions=tuple(body.regions),
        ports=tuple({"port": p.port, "type": p.type} for p in body.ports),
        envs=tuple({"key": e.key, "value": e.value} for e in body.envs),
        webhook_url=body.webhook_url,
        labels=dict(body.labels),
        readiness=body.readiness.model_dump() if body.readiness else None,
        auto_stop=body.auto_stop.model_dump(by_alias=True) if body.auto_stop else None,
        on_interruption=(
            body.on_interruption.model_dump(by_alias=True, exclude_none=True)
            if body.on_interruption
            else None
        ),
        launch=body.launch_options(),
    )


async def _check_webhook_target(url: str, allow_private: bool) -> None:
    """Refuse private, loopback, link-local and metadata targets now, when we can tell.

    A host that does not resolve right now is accepted (DNS may be down, or the receiver
    not yet deployed): every delivery checks the target again and records a refusal.
    """
    try:
        await check_webhook_target(url, allow_private=allow_private, resolve_timeout=2.0)
    except UnresolvableHostError:
        log.info("instance.webhook_host_unresolved", host=urlsplit(url).hostname)
    except WebhookTargetRefusedError as exc:
        raise _invalid("webhookUrl", exc.message, url) from None


def request_fingerprint(data: dict[str, Any]) -> str:
    """Same JSON object → same fingerprint, whatever its key order or spacing."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _location(instance_id: str) -> str:
    return f"/api/instances/{instance_id}"


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1", ""):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise _invalid(name, "must be true or false", value)


async def create_instance(request: Request) -> JSONResponse:
    dry_run = _flag(request, "dryRun")
    data = parse_json_object(await read_body(request))
    body = validate(CreateInstanceBody, data)
    settings = _resources(request).settings
    if body.webhook_url is not None and settings.webhook_secret is None:
        raise _invalid(
            "webhookUrl",
            "this service has no WEBHOOK_SECRET configured, so it cannot sign notifications; "
            "it never sends unsigned ones",
            body.webhook_url,
        )
    if body.webhook_url is not None:
        await _check_webhook_target(body.webhook_url, settings.allow_private_webhook_targets)
    team = _team_for_create(request, body.team)
    if dry_run:
        # Nothing is created, no Idempotency-Key is used up: the plan only.
        return JSONResponse(await _lifecycle(request).plan(_spec_from(body, team)))
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY):
        raise _invalid("Idempotency-Key", f"must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    fingerprint = request_fingerprint(data)
    created = await _lifecycle(request).create(
        _spec_from(body, team),
        caller=request.state.caller,
        idempotency_key=key,
        fingerprint=fingerprint,
    )
    headers = {"Location": _location(str(created.body["id"]))}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(created.body, status_code=created.status, headers=headers)


def _limit(query: Query, default: int = DEFAULT_PAGE) -> int:
    return query.integer("limit", default=default, low=1, high=MAX_PAGE)


def _statuses(query: Query) -> tuple[Status, ...]:
    values = [
        part.strip() for raw in query.texts("status") for part in raw.split(",") if part.strip()
    ]
    try:
        return tuple(Status(value) for value in values)
    except ValueError:
        known = ", ".join(status.value for status in Status)
        raise _invalid("status", f"must be one of {known}", ",".join(values)[:100]) from None


def _team_filter(request: Request, query: Query) -> str | None:
    """`team=` narrows an admin's list; any other key lists its own team only (naming
    another team finds nothing, as if it had no instances)."""
    raw = query.text("team", max_length=MAX_TEAM)
    if raw is not None and not valid_team(raw):
        raise _invalid("team", f"must be {TEAM_RULE}", raw[:MAX_TEAM])
    scope = principal_of(request).scope
    if scope is None:
        return raw or None
    return scope if raw in (None, scope) else NO_TEAM


async def list_instances(request: Request) -> JSONResponse:
    query = Query(request.query_params)
    limit = _limit(query)
    where = repo.InstanceFilter(
        statuses=_statuses(query),
        region=query.text("region"),
        product=query.text("product"),
        name=query.text("name"),
        labels=query.label_filters(),
        team=_team_filter(request, query),
    )
    before = query.position_cursor()
    async with _resources(request).database.read() as conn:
        page = await repo.list_instances(conn, where, limit=limit, before=before)
    next_cursor = encode_position(*page.next_key) if page.next_key else None
    return JSONResponse(
        {"items": [instance_view(i) for i in page.items], "nextCursor": next_cursor}
    )


def _instance_body(instance: Instance) -> tuple[str, bytes]:
    return instance.team, orjson.dumps(instance_view(instance))


async def get_instance(request: Request) -> Response:
    key = request.path_params["instance_id"]
    found = await repo.find_instance_derived(_resources(request).database, key, _instance_body)
    if found is None or not principal_of(request).sees(found[0]):
        raise InstanceNotFoundError.for_id(key)
    return Response(found[1], media_type="application/json")


async def list_events(request: Request) -> JSONResponse:
    instance = await _lifecycle(request).get(request.path_params["instance_id"])
    query = Query(request.query_params)
    limit = _limit(query, default=100)
    after = query.sequence_cursor()
    async with _resources(request).database.read() as conn:
        page = await repo.list_events(conn, instance.id, after_seq=after, limit=limit)
    return JSONResponse(
        {
            "instanceId": instance.id,
            "items": [event_view(e) for e in page.items],
            "nextCursor": str(page.next_key[0]) if page.next_key else None,
        }
    )


async def _action(request: Request, name: str) -> JSONResponse:
    lifecycle = _lifecycle(request)
    instance_id = request.path_params["instance_id"]
    actions = {
        "start": lifecycle.start,
        "stop": lifecycle.stop,
        "restart": lifecycle.restart,
        "delete": lifecycle.delete,
    }
    instance = await actions[name](instance_id)
    return JSONResponse(instance_view(instance), status_code=202)


async def start_instance(request: Request) -> JSONResponse:
    return await _action(request, "start")


async def stop_instance(request: Request) -> JSONResponse:
    return await _action(request, "stop")


async def restart_instance(request: Request) -> JSONResponse:
    return await _action(request, "restart")


async def delete_instance(request: Request) -> JSONResponse:
    return await _action(request, "delete")


async def put_last_used(request: Request) -> JSONResponse:
    data = parse_json_object(await read_body(request), empty_ok=True)
    body = validate(LastUsedBody, data)
    now = _resources(request).clock.now()
    at = body.last_used_at
    if at is not None:
        if at > now + HEARTBEAT_SKEW:
            raise _invalid("lastUsedAt", "is in the future", data.get("lastUsedAt"))
        at = min(at, now)
    instance = await _lifecycle(request).touch(request.path_params["instance_id"], at)
    return JSONResponse(instance_view(instance))


ROUTES = [
    route("/instances", {"POST": create_instance, "GET": list_instances}),
    route(
        "/instances/{instance_id}",
        {"GET": get_instance, "DELETE": delete_instance, "PATCH": patch_policies},
    ),
    route("/instances/{instance_id}/events", {"GET": list_events}),
    route("/instances/{instance_id}/start", {"POST": start_instance}),
    route("/instances/{instance_id}/stop", {"POST": stop_instance}),
    route("/instances/{instance_id}/restart", {"POST": restart_instance}),
    route("/instances/{instance_id}/last-used", {"PUT": put_last_used}),
]
