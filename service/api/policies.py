"""`PATCH /api/instances/{id}`: change an instance's idle auto-stop and spot-interruption
policies. A field left out is kept; null clears it (the service defaults apply again)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from service.api.access import lifecycle_for
from service.api.bodies import parse_json_object, read_body, validate
from service.api.responses import JSONResponse
from service.api.schemas import UpdatePoliciesBody
from service.db import policy as policy_db
from service.presenters import instance_view
from service.resources import Resources


async def patch_policies(request: Request) -> JSONResponse:
    resources: Resources = request.state.resources
    body = validate(UpdatePoliciesBody, parse_json_object(await read_body(request)))
    instance = await lifecycle_for(request).get(request.path_params["instance_id"])
    changes: dict[str, Any] = {}
    if "auto_stop" in body.model_fields_set:
        changes["autoStop"] = body.auto_stop.model_dump(by_alias=True) if body.auto_stop else None
    if "on_interruption" in body.model_fields_set:
        changes["onInterruption"] = (
            body.on_interruption.model_dump(by_alias=True, exclude_none=True)
            if body.on_interruption
            else None
        )
    async with resources.database.transaction() as conn:
        updated = await policy_db.set_policies(
            conn, instance.id, changes, now=resources.clock.now()
        )
    return JSONResponse(instance_view(updated))
