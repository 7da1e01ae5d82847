"""`novita-lifecycle keys`: issue, list and revoke API keys in the database.

`keys create` prints the key's id, team and role, then the key itself, last and alone on
its line: it is shown this once and never again (only its SHA-256 is stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from service.auth import keys as key_format
from service.auth.requests import NewKeyRequest
from service.auth.roles import ROLES, TEAM_RULE, Role, valid_team
from service.clock import SystemClock
from service.db import api_keys as key_store
from service.db.engine import Database
from service.db.migrations import check_schema_is_current
from service.errors import DatabaseError
from service.presenters import iso

T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> None:
    click.echo(f"novita-lifecycle: {message}", err=True)
    raise SystemExit(code)


def _with_database(work: Callable[[Database], Awaitable[T]]) -> T:
    from service.__main__ import _masked, settings_or_exit

    settings = settings_or_exit()

    async def run() -> T:
        database = Database.from_url(
            settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        try:
            await check_schema_is_current(database.engine)
            return await work(database)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except DatabaseError as exc:
        _fail(exc.message, EXIT_FAILED)
    except (OperationalError, DBAPIError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        _fail(f"cannot use the database at {_masked(settings.database_url)}: {reason}", EXIT_FAILED)
    raise AssertionError("unreachable")


@click.group()
def keys() -> None:
    """Issue, list and revoke API keys (stored hashed in the database)."""


@keys.command()
@click.option("--team", required=True, help=f"The team the key acts for: {TEAM_RULE}.")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the key may do.")
@click.option("--name", default=None, help="A note saying what the key is for.")
def create(team: str, role: str, name: str | None) -> None:
    """Issue a key; the key is printed last, on a line of its own, and only this once."""
    try:
        wanted = NewKeyRequest(team=team, role=Role(role), name=name)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{error['loc'][0]}: {error['msg']}" for error in exc.errors() if error["loc"]
        )
        _fail(problems or "invalid key request", EXIT_USAGE)
        return

    async def work(database: Database) -> tuple[key_store.ApiKey, str]:
        async with database.transaction() as conn:
            return await key_store.create_key(
                conn,
                team=wanted.team,
                role=wanted.role,
                name=wanted.name,
                now=SystemClock().now(),
            )

    created, secret = _with_database(work)
    click.echo(f"key id: {created.id}")
    click.echo(f"team: {created.team}")
    click.echo(f"role: {created.role.value}")
    if created.name is not None:
        click.echo(f"name: {created.name}")
    click.echo("The key follows; it is shown only this once (store it now):")
    click.echo(secret)


@keys.command(name="list")
@click.option("--team", default=None, help="Only this team's keys.")
def list_keys(team: str | None) -> None:
    """Every key (never a secret): id, team, role, name, created, last used, revoked."""
    if team is not None and not valid_team(team):
        _fail(f"--team: must be {TEAM_RULE}", EXIT_USAGE)

    async def work(database: Database) -> list[key_store.ApiKey]:
        async with database.read() as conn:
            return await key_store.list_keys(conn, team=team)

    found = _with_database(work)
    header = ("ID", "TEAM", "ROLE", "NAME", "CREATED", "LAST USED", "REVOKED")
    rows = [
        (
            k.id,
            k.team,
            k.role.value,
            k.name or "-",
            iso(k.created_at) or "-",
            iso(k.last_used_at) or "never",
            iso(k.revoked_at) or "-",
        )
        for k in found
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@keys.command()
@click.argument("key", metavar="KEY_ID_OR_KEY")
def revoke(key: str) -> None:
    """Revoke a key, named by its id or by the key itself; every process refuses it within
    API_KEY_CACHE_SECONDS."""
    key_id = key_format.key_id_of(key) if key.startswith(key_format.PREFIX) else key
    if key_id is None or not key_format.KEY_ID.fullmatch(key_id):
        _fail("not a key id (12 hex digits) or a key of this service", EXIT_USAGE)
        return

    async def work(database: Database) -> key_store.ApiKey | None:
        async with database.transaction() as conn:
            return await key_store.revoke(conn, key_id, now=SystemClock().now())

    revoked = _with_database(work)
    if revoked is None:
        _fail(f"no key with id {key_id}", EXIT_FAILED)
        return
    click.echo(
        f"revoked key {revoked.id} (team {revoked.team}, role {revoked.role.value}) "
        f"at {iso(revoked.revoked_at)}"
    )
