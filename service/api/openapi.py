"""`GET /openapi.json`: the OpenAPI 3.1 description of every route.

Request bodies come from the pydantic models the handlers validate with, so the document
cannot drift from validation; response shapes are written out here next to the presenters
they describe (a schemathesis run checks real responses against them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from service import __version__
from service.api.notifications import RedeliverFailedBody, TargetBody
from service.api.responses import JSONResponse
from service.api.schemas import LABEL_KEY, CreateInstanceBody, LastUsedBody, UpdatePoliciesBody
from service.auth.roles import TEAM_QUERY_PATTERN
from service.domain import Status
from service.notifications.models import NotificationStatus

_REF = "#/components/schemas/{model}"

NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "requestId"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
                "requestId": NULLABLE_STRING,
            },
        }
    },
}

INSTANCE = {
    "type": "object",
    "required": ["id", "name", "status", "createdAt", "sequence"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "team": {"type": "string", "description": "The owning team (that of the creating key)"},
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "statusReason": NULLABLE_STRING,
        "providerStatus": NULLABLE_STRING,
        "novitaInstanceId": NULLABLE_STRING,
        "productId": NULLABLE_STRING,
        "productName": NULLABLE_STRING,
        "region": NULLABLE_STRING,
        "preferredRegion": NULLABLE_STRING,
        "regions": {"type": "array", "items": {"type": "string"}},
        "gpuNum": {"type": "integer"},
        "rootfsSize": NULLABLE_INT,
        "billingMode": {"type": "string"},
        "pricePerHour": {**NULLABLE_STRING, "description": "USD per GPU-hour, decimal string"},
        "templateId": NULLABLE_STRING,
        "imageUrl": NULLABLE_STRING,
        "imageAuthId": NULLABLE_STRING,
        "ports": {"type": "array", "items": {"type": "object"}},
        "envKeys": {"type": "array", "items": {"type": "string"}},
        "webhookUrl": NULLABLE_STRING,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "readiness": {"type": ["object", "null"]},
        "autoStop": {"type": ["object", "null"]},
        "onInterruption": {"type": ["object", "null"]},
        "replacesInstanceId": NULLABLE_STRING,
        "replacedByInstanceId": NULLABLE_STRING,
        "portMappings": {"type": "array", "items": {"type": "object"}},
        "kind": {"type": "string", "enum": ["gpu", "cpu"]},
        "tools": {"type": "array", "items": {"type": "object"}},
        "networkStorages": {"type": "array", "items": {"type": "object"}},
        "command": NULLABLE_STRING,
        "entrypoint": NULLABLE_STRING,
        "minCudaVersion": NULLABLE_STRING,
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": NULLABLE_TIME,
        "submittedAt": NULLABLE_TIME,
        "runningAt": NULLABLE_TIME,
        "readyAt": NULLABLE_TIME,
        "stoppedAt": NULLABLE_TIME,
        "deletedAt": NULLABLE_TIME,
        "lastUsedAt": NULLABLE_TIME,
        "sequence": {"type": "integer"},
    },
}

EVENT = {
    "type": "object",
    "required": ["sequence", "at", "source", "kind"],
    "properties": {
        "sequence": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "source": {"type": "string"},
        "kind": {"type": "string"},
        "fromStatus": NULLABLE_STRING,
        "toStatus": NULLABLE_STRING,
        "providerStatus": NULLABLE_STRING,
        "reason": NULLABLE_STRING,
        "detail": {"type": "object"},
    },
}

NOTIFICATION = {
    "type": "object",
    "required": ["id", "instanceId", "sequence", "type", "status", "attempts", "createdAt"],
    "properties": {
        "id": {"type": "string"},
        "instanceId": {"type": "string"},
        "sequence": {"type": "integer"},
        "type": {"type": "string"},
        "status": {"type": "string"},
        "targetUrl": NULLABLE_STRING,
        "attempts": {"type": "integer"},
        "nextAttemptAt": NULLABLE_TIME,
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": NULLABLE_TIME,
        "lastStatusCode": NULLABLE_INT,
        "lastError": NULLABLE_STRING,
        "deliveredAt": NULLABLE_TIME,
        "payload": {"type": "object"},
        "attemptLog": {"type": "array", "items": {"type": "object"}},
    },
}


OPERATION_IDS = {
    ("post", "/api/instances"): "createInstance",
    ("get", "/api/instances"): "listInstances",
    ("get", "/api/instances/{instance_id}"): "getInstance",
    ("delete", "/api/instances/{instance_id}"): "deleteInstance",
    ("patch", "/api/instances/{instance_id}"): "updateInstancePolicies",
    ("get", "/api/instances/{instance_id}/events"): "listInstanceEvents",
    ("put", "/api/instances/{instance_id}/last-used"): "touchInstance",
    ("post", "/api/instances/{instance_id}/start"): "startInstance",
    ("post", "/api/instances/{instance_id}/stop"): "stopInstance",
    ("post", "/api/instances/{instance_id}/restart"): "restartInstance",
    ("get", "/api/events"): "streamEvents",
    ("get", "/api/notifications"): "listNotifications",
    ("get", "/api/notifications/{notification_id}"): "getNotification",
    ("post", "/api/notifications/{notification_id}/redeliver"): "redeliverNotification",
    ("post", "/api/notifications/redeliver"): "redeliverFailedNotifications",
}

# From a created instance to everything that takes its id (lets tools chain calls).
INSTANCE_LINKS = {
    op: {"operationId": op, "parameters": {"instance_id": "$response.body#/id"}}
    for op in (
        "getInstance",
        "deleteInstance",
        "updateInstancePolicies",
        "listInstanceEvents",
        "touchInstance",
        "startInstance",
        "stopInstance",
        "restartInstance",
    )
}


_PLACEMENT = {
    "region": {"type": "string"},
    "clusterId": {"type": "string"},
    "productId": {"type": "string"},
    "productName": {"type": "string"},
    "pricePerGpuHour": {**NULLABLE_STRING, "description": "USD per GPU-hour"},
    "pricePerHour": {**NULLABLE_STRING, "description": "USD per hour for gpuNum GPUs"},
    "rootfsSize": NULLABLE_INT,
}
PLAN = {
    "type": "object",
    "description": "`POST /api/instances?dryRun=true`: where the request would land; "
    "nothing is created",
    "required": ["dryRun", "chosen", "billingMode", "gpuNum", "regionOrder", "candidates"],
    "properties": {
        "dryRun": {"const": True},
        "chosen": {
            "oneOf": [
                {"type": "object", "required": list(_PLACEMENT), "properties": _PLACEMENT},
                {"type": "null"},
            ]
        },
        "billingMode": {"type": "string"},
        "gpuNum": {"type": "integer"},
        "regionOrder": {"type": "array", "items": {"type": "string"}},
        "candidates": {
            "type": "array",
            "description": "every region x product considered, in the order tried",
            "items": {
                "type": "object",
                "required": [*_PLACEMENT, "rank", "chosen", "reason"],
                "properties": {
                    **_PLACEMENT,
                    "rank": {**NULLABLE_INT, "description": "null: never tried"},
                    "chosen": {"type": "boolean"},
                    "reason": {"type": "string"},
                },
            },
        },
        "message": {"type": "string"},
    },
}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "nextCursor": NULLABLE_STRING,
        },
    }


def _body_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any] | str, description: str = "") -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description or "OK", "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (not JSON, wrong shape)",
        401: "Missing or wrong credentials",
        403: "This key's role may not do this; the message names the role needed",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Body too large",
        422: "Validation failed; `details.fields` names each field",
        503: "Temporarily unavailable; see Retry-After",
    }
    return {str(status): _json("Error", text[status]) for status in statuses}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    parameters: list[dict[str, Any]] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": body},
        }
    if parameters:
        operation["parameters"] = parameters
    if not secured:
        operation["security"] = []
    return operation


# What `service.api.query_params` accepts as a text filter (empty means not given).
QUERY_TEXT = {"type": "string", "maxLength": 255}


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or QUERY_TEXT,
    }


def _status_list(statuses: list[str]) -> dict[str, Any]:
    """`status=a,b` (or repeated): any of these statuses; empty items are skipped, so an
    empty `status=` means any status."""
    return {
        **_query("status", "Comma-separated statuses (any of them; empty: any status)"),
        "style": "form",
        "explode": False,
        "schema": {"type": "array", "items": {"type": "string", "enum": ["", *statuses]}},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }


def build_document() -> dict[str, Any]:
    components: dict[str, Any] = {
        "Error": ERROR,
        "Instance": INSTANCE,
        "Event": EVENT,
        "Notification": NOTIFICATION,
        "InstancePage": _page("Instance"),
        "Plan": PLAN,
        "NotificationPage": _page("Notification"),
    }
    create = {"schema": _body_schema(CreateInstanceBody, components)}
    last_used = {"schema": _body_schema(LastUsedBody, components)}
    policies = {"schema": _body_schema(UpdatePoliciesBody, components)}
    redeliver = {"schema": _body_schema(RedeliverFailedBody, components)}
    target = {"schema": _body_schema(TargetBody, components)}
    instance_id = [_path("instance_id")]
    action_errors = _errors(401, 404, 409, 503)
    limit = _query("limit", "Page size", type="integer", minimum=1, maximum=200)
    page = [limit, _query("cursor", "From the previous page's nextCursor", type="string")]
    event_page = [
        limit,
        _query(
            "cursor",
            "From the previous page's nextCursor (an event sequence number)",
            type="string",
            pattern="^[0-9]{0,10}$",
        ),
    ]
    paths: dict[str, Any] = {
        "/health": {
            "get": _operation(
                "Readiness of this process",
                {"200": _json({"type": "object"}), "503": _json({"type": "object"}, "Not ready")},
                secured=False,
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                secured=False,
            )
        },
        "/webhooks/novita": {
            "post": _operation(
                "Provider event (Standard Webhooks signature)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["received", "duplicate"],
                            "properties": {
                                "received": {"type": "boolean"},
                                "duplicate": {"type": "boolean"},
                            },
                        }
                    ),
                    **_errors(400, 401, 413, 503),
                },
                body={"schema": {"type": "object"}},
                parameters=[
                    _header("webhook-id", "Message id"),
                    _header("webhook-timestamp", "Unix seconds"),
                    _header("webhook-signature", "v1,<base64> entries"),
                ],
                secured=False,
            )
        },
        "/api/instances": {
            "post": _operation(
                "Create an instance",
                {
                    "200": _json("Plan", "With dryRun=true: the plan; nothing is created"),
                    "202": {**_json("Instance", "Accepted: pending"), "links": INSTANCE_LINKS},
                    **_errors(400, 401, 409, 413, 422, 503),
                },
                body=create,
                parameters=[
                    _header("Idempotency-Key", "Replays the stored response"),
                    _query(
                        "dryRun",
                        "true: answer 200 with the plan (region, product, price, every "
                        "candidate and why) and create nothing",
                        type="string",
                        # What the handler takes: true/false in any case, 1/0, empty = true.
                        pattern="^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)?$",
                    ),
                ],
            ),
            "get": _operation(
                "List instances, newest first",
                {"200": _json("InstancePage"), **_errors(401, 422)},
                parameters=[
                    _status_list([s.value for s in Status]),
                    _query("region", "Region code"),
                    _query("product", "Product name or id"),
                    _query("name", "Exact name"),
                    _query(
                        "label",
                        "KEY:VALUE (or KEY=VALUE): instances with this label",
                        type="string",
                        pattern=f"^({LABEL_KEY.pattern}[:=][^\\x00]{{0,255}})?$",
                    ),
                    _query(
                        "team",
                        "Only this team (admins; other keys see their own team)",
                        type="string",
                        pattern=TEAM_QUERY_PATTERN,
                    ),
                    *page,
                ],
            ),
        },
        "/api/instances/{instance_id}": {
            "get": _operation(
                "One instance (our id or Novita id)",
                {"200": _json("Instance"), **_errors(401, 404)},
                parameters=instance_id,
            ),
            "delete": _operation(
                "Delete an instance",
                {"202": _json("Instance"), **action_errors},
                parameters=instance_id,
            ),
            "patch": _operation(
                "Change the idle auto-stop and spot-interruption policies",
                {"200": _json("Instance"), **_errors(400, 401, 404, 409, 413, 422)},
                body=policies,
                parameters=instance_id,
            ),
        },
        "/api/instances/{instance_id}/events": {
            "get": _operation(
                "An instance's history, oldest first",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["instanceId", "items", "nextCursor"],
                            "properties": {
                                "instanceId": {"type": "string"},
                                "items": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Event"},
                                },
                                "nextCursor": NULLABLE_STRING,
                            },
                        }
                    ),
                    **_errors(401, 404, 422),
                },
                parameters=[*instance_id, *event_page],
            )
        },
        "/api/instances/{instance_id}/last-used": {
            "put": _operation(
                "Heartbeat for idle policies (no body: now)",
                {"200": _json("Instance"), **_errors(400, 401, 404, 409, 413, 422)},
                body=last_used,
                body_required=False,
                parameters=instance_id,
            )
        },
        "/api/events": {
            "get": _operation(
                "Instance events as Server-Sent Events, resumable with Last-Event-ID",
                {
                    "200": {
                        "description": "An endless `text/event-stream`: each message has "
                        "`id` (the event's place in the whole history), `event: "
                        "instance-event` and a JSON `data` line (an Event plus `id` and "
                        "`instanceId`); comment lines are heartbeats",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 422),
                },
                parameters=[
                    _query("instance", "Only this instance (our id or Novita's); repeatable"),
                    _query("label", "Only instances with this label, KEY:VALUE; repeatable"),
                    _query("status", "Only events moving to these statuses, comma-separated"),
                    _query(
                        "lastEventId",
                        "Resume after this event id (for clients that cannot send the "
                        "Last-Event-ID header)",
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Resume after this event id (digits)",
                        "schema": {"type": "string", "pattern": "^[0-9]{0,19}$"},
                    },
                ],
            )
        },
        "/api/notifications": {
            "get": _operation(
                "Notifications sent to clients",
                {"200": _json("NotificationPage"), **_errors(401, 422)},
                parameters=[
                    _query("instance", "Instance id"),
                    _query(
                        "status",
                        "Status (empty: any)",
                        type="string",
                        enum=["", *(s.value for s in NotificationStatus)],
                    ),
                    _query("type", "Event type"),
                    *page,
                ],
            )
        },
        "/api/notifications/redeliver": {
            "post": _operation(
                "Redeliver every failed notification since a time",
                {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["redelivered"],
                            "properties": {"redelivered": {"type": "integer"}},
                        }
                    ),
                    **_errors(400, 401, 413, 422),
                },
                body=redeliver,
            )
        },
        "/api/notifications/{notification_id}": {
            "get": _operation(
                "One notification with every attempt",
                {"200": _json("Notification"), **_errors(401, 404)},
                parameters=[_path("notification_id")],
            )
        },
        "/api/notifications/{notification_id}/redeliver": {
            "post": _operation(
                "Queue a notification again",
                {"202": _json("Notification"), **_errors(401, 404, 409)},
                parameters=[_path("notification_id")],
            )
        },
        "/api/webhook-targets/disabled": {
            "get": _operation(
                "Notification URLs disabled after 410 Gone",
                {"200": _json({"type": "object"}), **_errors(401)},
            )
        },
        "/api/webhook-targets/enable": {
            "post": _operation(
                "Re-enable a disabled notification URL",
                {"200": _json({"type": "object"}), **_errors(400, 401, 413, 422)},
                body=target,
            )
        },
    }
    for action in ("start", "stop", "restart"):
        paths[f"/api/instances/{{instance_id}}/{action}"] = {
            "post": _operation(
                f"{action.capitalize()} an instance",
                {"202": _json("Instance"), **action_errors},
                parameters=instance_id,
            )
        }
    for extra in EXTRA_PATHS:
        paths.update(extra(components))
    for (method, path), operation_id in OPERATION_IDS.items():
        paths[path][method]["operationId"] = operation_id
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "novita-lifecycle",
            "version": __version__,
            "description": "GPU instances on Novita.ai: lifecycle, webhooks, reports.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


# Other API modules add their paths here (a function of the shared components).
EXTRA_PATHS: list[Any] = []


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(build_document())
