"""`/api/keys` (admin keys only): issue, list and revoke API keys, as `novita-lifecycle
keys` does. The secret of a new key is in the creation answer only; no other answer,
listing or log line ever carries it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from service.api.auth import Authenticator
from service.api.bodies import parse_json_object, read_body, validate
from service.api.openapi import EXTRA_PATHS, _body_schema, _errors, _json, _operation, _path, _query
from service.api.responses import JSONResponse
from service.api.routing import route
from service.auth import keys as key_format
from service.auth.requests import NewKeyRequest
from service.auth.roles import MAX_TEAM, ROLES, TEAM_QUERY_PATTERN, TEAM_RULE, valid_team
from service.db import api_keys as key_store
from service.errors import ValidationFailedError
from service.presenters import iso
from service.resources import Resources


def key_view(key: key_store.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "team": key.team,
        "role": key.role.value,
        "name": key.name,
        "createdAt": iso(key.created_at),
        "lastUsedAt": iso(key.last_used_at),
        "revokedAt": iso(key.revoked_at),
    }


def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


async def list_keys(request: Request) -> JSONResponse:
    team = request.query_params.get("team") or None  # empty: not given
    unknown = sorted(set(request.query_params) - {"team"})
    if unknown:
        raise ValidationFailedError([{"field": f, "message": "unknown parameter"} for f in unknown])
    if team is not None and not valid_team(team):
        raise ValidationFailedError(
            [{"field": "team", "message": f"must be {TEAM_RULE}", "value": team[:MAX_TEAM]}]
        )
    async with _resources(request).database.read() as conn:
        found = await key_store.list_keys(conn, team=team)
    return JSONResponse({"items": [key_view(k) for k in found]})


async def create_key(request: Request) -> JSONResponse:
    wanted = validate(NewKeyRequest, parse_json_object(await read_body(request)))
    resources = _resources(request)
    async with resources.database.transaction() as conn:
        created, secret = await key_store.create_key(
            conn, team=wanted.team, role=wanted.role, name=wanted.name, now=resources.clock.now()
        )
    return JSONResponse(
        {**key_view(created), "key": secret},
        status_code=201,
        headers={"Location": f"/api/keys/{created.id}", "Cache-Control": "no-store"},
    )


REVOKE_PATTERN = r"^([0-9a-f]{12}|nlk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,100})$"


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(
        pattern=REVOKE_PATTERN, max_length=200, description="A key id, or the key itself"
    )


async def revoke_by_id(request: Request) -> JSONResponse:
    raw: str = request.path_params["key_id"]
    if not key_format.KEY_ID.fullmatch(raw):
        # A whole key in a URL would be written to access logs: ids only here.
        raise HTTPException(
            404,
            "no API key with that id (ids are 12 hex digits; to revoke by the key itself, "
            "POST it to /api/keys/revoke)",
        )
    return await _revoke(request, raw)


async def revoke_by_body(request: Request) -> JSONResponse:
    """`{"key": "<key id or the key itself>"}`: a key goes in a body, never in a URL."""
    raw = validate(RevokeBody, parse_json_object(await read_body(request))).key
    key_id = key_format.key_id_of(raw) if raw.startswith(key_format.PREFIX) else raw
    if key_id is None or not key_format.KEY_ID.fullmatch(key_id):
        raise ValidationFailedError(
            [{"field": "key", "message": "must be a key id (12 hex digits) or a key of ours"}]
        )
    return await _revoke(request, key_id)


async def _revoke(request: Request, key_id: str) -> JSONResponse:
    resources = _resources(request)
    async with resources.database.transaction() as conn:
        revoked = await key_store.revoke(conn, key_id, now=resources.clock.now())
    if revoked is None:
        raise HTTPException(404, f"no API key with id {key_id}")
    authenticator: Authenticator = request.state.authenticator
    authenticator.forget(key_id)
    return JSONResponse(key_view(revoked))


ROUTES = [
    route("/keys", {"GET": list_keys, "POST": create_key}),
    Route("/keys/revoke", revoke_by_body, methods=["POST"]),
    Route("/keys/{key_id}", revoke_by_id, methods=["DELETE"]),
]

_KEY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "team": {"type": "string"},
    "role": {"type": "string", "enum": list(ROLES)},
    "name": {"type": ["string", "null"]},
    "createdAt": {"type": "string", "format": "date-time"},
    "lastUsedAt": {"type": ["string", "null"], "format": "date-time"},
    "revokedAt": {"type": ["string", "null"], "format": "date-time"},
}
_KEY_REQUIRED = ["id", "team", "role", "createdAt"]
_KEY = {"type": "object", "required": _KEY_REQUIRED, "properties": _KEY_PROPERTIES}


def openapi_paths(components: dict[str, Any]) -> dict[str, Any]:
    components["ApiKey"] = _KEY
    created = {
        "type": "object",
        "required": [*_KEY_REQUIRED, "key"],
        "properties": {
            **_KEY_PROPERTIES,
            "key": {"type": "string", "description": "The key; shown in this answer only"},
        },
    }
    revoke = {
        "200": _json("ApiKey", "The key, now revoked"),
        **_errors(401, 403, 404),
    }
    key_id = [_path("key_id")]
    return {
        "/api/keys": {
            "get": {
                **_operation(
                    "List API keys (admin): never a secret; with last use and revocation",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {
                                    "items": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/ApiKey"},
                                    }
                                },
                            }
                        ),
                        **_errors(401, 403, 422),
                    },
                    parameters=[
                        _query(
                            "team",
                            "Only this team's keys",
                            type="string",
                            pattern=TEAM_QUERY_PATTERN,
                        )
                    ],
                ),
                "operationId": "listApiKeys",
            },
            "post": {
                **_operation(
                    "Issue an API key (admin) for a team and role; the key is in this answer only",
                    {"201": _json(created, "Created"), **_errors(400, 401, 403, 413, 422)},
                    body={"schema": _body_schema(NewKeyRequest, components)},
                ),
                "operationId": "createApiKey",
            },
        },
        "/api/keys/{key_id}": {
            "delete": {
                **_operation("Revoke an API key (admin) by its id", revoke, parameters=key_id),
                "operationId": "revokeApiKey",
            }
        },
        "/api/keys/revoke": {
            "post": {
                **_operation(
                    "Revoke an API key (admin) by its id or by the key itself (in the body, "
                    "so it never appears in a URL or an access log)",
                    {**revoke, **_errors(400, 413, 422)},
                    body={"schema": _body_schema(RevokeBody, components)},
                ),
                "operationId": "revokeApiKeyByKey",
            }
        },
    }


EXTRA_PATHS.append(openapi_paths)
