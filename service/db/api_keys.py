"""The `api_keys` table: issue, list, find, revoke, and note the last use of API keys.

Only the SHA-256 digest of a key is stored (`service.auth.keys`); nothing here ever
returns or logs a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.auth import keys
from service.auth.roles import Role
from service.db.models import api_keys

_k = api_keys.c
_PUBLIC = (_k.id, _k.team, _k.role, _k.name, _k.created_at, _k.last_used_at, _k.revoked_at)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as listings show it: never its secret or digest."""

    id: str
    team: str
    role: Role
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What authentication needs of a key: its digest to compare, and its principal."""

    key: ApiKey
    secret_hash: str


def _api_key_from_mapping(m: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        id=m["id"],
        team=m["team"],
        role=Role(m["role"]),
        name=m["name"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


def _stored_key_from_mapping(m: Mapping[Any, Any]) -> StoredKey:
    return StoredKey(_api_key_from_mapping(m), m["secret_hash"])


async def create_key(
    conn: AsyncConnection, *, team: str, role: Role, name: str | None, now: datetime
) -> tuple[ApiKey, str]:
    """A new key: its record, and its secret (to be shown to the caller once)."""
    new = keys.generate()
    await conn.execute(
        api_keys.insert().values(
            id=new.id,
            team=team,
            role=role.value,
            name=name,
            secret_hash=new.digest,
            created_at=now,
        )
    )
    key = ApiKey(
        id=new.id,
        team=team,
        role=role,
        name=name,
        created_at=now,
        last_used_at=None,
        revoked_at=None,
    )
    return key, new.secret


async def list_keys(conn: AsyncConnection, *, team: str | None = None) -> list[ApiKey]:
    query = sa.select(*_PUBLIC).order_by(_k.team, _k.created_at, _k.id)
    if team is not None:
        query = query.where(_k.team == team)
    return [_api_key_from_mapping(row._mapping) for row in await conn.execute(query)]


async def get_key(conn: AsyncConnection, key_id: str) -> ApiKey | None:
    row = (await conn.execute(sa.select(*_PUBLIC).where(_k.id == key_id))).first()
    return _api_key_from_mapping(row._mapping) if row is not None else None


async def find_by_id(conn: AsyncConnection, key_id: str) -> StoredKey | None:
    row = (await conn.execute(sa.select(*_PUBLIC, _k.secret_hash).where(_k.id == key_id))).first()
    return _stored_key_from_mapping(row._mapping) if row is not None else None


async def revoke(conn: AsyncConnection, key_id: str, *, now: datetime) -> ApiKey | None:
    """Revoke the key (a second revoke keeps the first time); None if there is no such key."""
    await conn.execute(
        api_keys.update().where(_k.id == key_id, _k.revoked_at.is_(None)).values(revoked_at=now)
    )
    return await get_key(conn, key_id)


async def note_use(
    conn: AsyncConnection, key_id: str, *, now: datetime, granularity: timedelta
) -> None:
    """Set `last_used_at` to `now`, unless it is already within `granularity` of it (so
    several processes noting the same minute write once between them)."""
    await conn.execute(
        api_keys.update()
        .where(
            _k.id == key_id,
            sa.or_(_k.last_used_at.is_(None), _k.last_used_at < now - granularity),
        )
        .values(last_used_at=now)
    )
