"""`/api/notifications`: what was sent to clients, every attempt, and redelivery."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.routing import Route

from service.api.access import principal_of
from service.api.bodies import parse_json_object, read_body, validate
from service.api.query_params import Query
from service.api.responses import JSONResponse
from service.api.schemas import Moment, _Body
from service.cursors import encode_position
from service.db import outbox
from service.errors import ValidationFailedError
from service.notifications.models import NotificationStatus
from service.notifications.views import notification_detail_view, notification_view
from service.presenters import iso
from service.resources import Resources

MAX_PAGE = 200


class RedeliverFailedBody(_Body):
    since: Moment
    instance_id: str | None = Field(default=None, alias="instanceId", max_length=64)


class TargetBody(_Body):
    url: str = Field(min_length=1, max_length=2048)


def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


def _invalid(field: str, message: str, value: Any) -> ValidationFailedError:
    return ValidationFailedError([{"field": field, "message": message, "value": value}])


async def list_notifications(request: Request) -> JSONResponse:
    query = Query(request.query_params)
    limit = query.integer("limit", default=50, low=1, high=MAX_PAGE)
    status = query.text("status")
    if status is not None and status not in {s.value for s in NotificationStatus}:
        known = ", ".join(s.value for s in NotificationStatus)
        raise _invalid("status", f"must be one of {known}", status[:100])
    async with _resources(request).database.read() as conn:
        page = await outbox.list_notifications(
            conn,
            instance_id=query.text("instance") or query.text("instanceId"),
            status=status,
            type=query.text("type"),
            after=query.position_cursor(),
            limit=limit,
            team=principal_of(request).scope,
        )
    return JSONResponse(
        {
            "items": [notification_view(n, include_payload=False) for n in page.items],
            "nextCursor": encode_position(*page.next_key) if page.next_key else None,
        }
    )


async def get_notification(request: Request) -> JSONResponse:
    async with _resources(request).database.read() as conn:
        detail = await outbox.get_notification(
            conn, request.path_params["notification_id"], team=principal_of(request).scope
        )
    return JSONResponse(notification_detail_view(detail))


async def redeliver_notification(request: Request) -> JSONResponse:
    resources = _resources(request)
    async with resources.database.transaction() as conn:
        notification = await outbox.redeliver_notification(
            conn,
            request.path_params["notification_id"],
            now=resources.clock.now(),
            team=principal_of(request).scope,
        )
    return JSONResponse(notification_view(notification), status_code=202)


async def redeliver_failed(request: Request) -> JSONResponse:
    body = validate(RedeliverFailedBody, parse_json_object(await read_body(request)))
    resources = _resources(request)
    async with resources.database.transaction() as conn:
        count = await outbox.redeliver_failed_since(
            conn,
            body.since,
            now=resources.clock.now(),
            instance_id=body.instance_id,
            team=principal_of(request).scope,
        )
    return JSONResponse({"redelivered": count}, status_code=202)


async def list_disabled_targets(request: Request) -> JSONResponse:
    async with _resources(request).database.read() as conn:
        targets = await outbox.list_disabled_targets(conn)
    return JSONResponse(
        {
            "items": [
                {
                    "url": t.url,
                    "disabledAt": iso(t.disabled_at),
                    "statusCode": t.status_code,
                    "notificationId": t.notification_id,
                }
                for t in targets
            ]
        }
    )


async def enable_target(request: Request) -> JSONResponse:
    body = validate(TargetBody, parse_json_object(await read_body(request)))
    async with _resources(request).database.transaction() as conn:
        enabled = await outbox.enable_target(conn, body.url)
    return JSONResponse({"url": body.url, "enabled": enabled})


ROUTES = [
    Route("/notifications", list_notifications, methods=["GET"]),
    Route("/notifications/redeliver", redeliver_failed, methods=["POST"]),
    Route("/notifications/{notification_id}", get_notification, methods=["GET"]),
    Route("/notifications/{notification_id}/redeliver", redeliver_notification, methods=["POST"]),
    Route("/webhook-targets/disabled", list_disabled_targets, methods=["GET"]),
    Route("/webhook-targets/enable", enable_target, methods=["POST"]),
]
