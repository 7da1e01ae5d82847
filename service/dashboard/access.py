"""Who may do what on the dashboard: the one check every page and action calls.

Sign-in takes the keys in API_KEYS, which are admin keys of the default team (issued,
team-scoped keys are for the API; `service.auth.roles`): a signed-in session may view
everything and act on everything. The check is still made
per permission, in this one function, so that roles slot in here later (a role per key,
a table of what each role may do) without touching the pages.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl

from starlette.requests import Request

from service.api.bodies import read_body
from service.auth.roles import Principal as ApiPrincipal
from service.auth.roles import Role
from service.dashboard.session import Session
from service.domain import DEFAULT_TEAM
from service.errors import ForbiddenError, MalformedRequestError

FORM_LIMIT = 16 * 1024
MAX_FORM_FIELDS = 20


class Permission(StrEnum):
    VIEW = "view"  # read pages, the event stream, CSV downloads
    ACT = "act"  # start, stop, restart, delete, redeliver


ADMIN = "admin"
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {ADMIN: frozenset(Permission)}


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: str
    csrf: str


class SignInRequiredError(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


def current_session(request: Request) -> Session | None:
    session: Session | None = request.state.dashboard_session
    return session


def authorize(request: Request, permission: Permission) -> Principal:
    """The signed-in caller, if allowed `permission`; raises otherwise (`SignInRequiredError`,
    or `ForbiddenError` when signed in but not allowed)."""
    session = current_session(request)
    if session is None or session.key_id is None:
        raise SignInRequiredError
    role = ADMIN  # sign-in takes the keys in API_KEYS only: admins of the default team
    if permission not in ROLE_PERMISSIONS.get(role, frozenset()):
        raise ForbiddenError(f"your role may not {permission.value}")
    # The API handlers the pages call see the principal such a key has on the API; the
    # events it causes record the session's key fingerprint, never the key.
    request.state.principal = ApiPrincipal(
        key_id=f"dashboard:{session.key_id[:12]}", team=DEFAULT_TEAM, role=Role.ADMIN
    )
    return Principal(key_id=session.key_id, role=role, csrf=session.csrf)


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the dashboard has no uploads, so the standard library's
    parser is all it needs); 413 past FORM_LIMIT, 400 when it does not decode."""
    raw = await read_body(request, limit=FORM_LIMIT)
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise MalformedRequestError(
            "the form is not valid application/x-www-form-urlencoded"
        ) from None
    return dict(pairs)


def check_csrf(session: Session | None, form: dict[str, str]) -> None:
    """Every POST carries the session's CSRF token (the sign-in form's too)."""
    token = form.get("csrf", "")
    if session is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise ForbiddenError("the form is stale or was not sent by this dashboard; reload it")
