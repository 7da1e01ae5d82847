"""API-key authentication for `/api`: `Authorization: Bearer <key>`, giving the request its
`Principal` (key id, team, role; `service.auth.roles`).

Two kinds of key are accepted:

- the keys in `API_KEYS`: admin keys of the default team, as before teams existed. Each is
  compared in constant time (no early exit on the first match), so timing tells nothing
  about which key, or how much of one, was right;
- keys issued from the database (`novita-lifecycle keys create`, `POST /api/keys`): the id
  inside the key finds its row, and the digest of the key is compared with the stored one
  in constant time.

Revocation takes effect in every process within `API_KEY_CACHE_SECONDS` (1 s by default;
0 reads the key's row on every request): that is how long a process may reuse what it
last read of a key. The process that revokes a key forgets it at once. The time of last
use is written at most once a minute per key and process, never once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import keys
from service.auth.roles import Principal, Role
from service.db import api_keys as key_store
from service.domain import DEFAULT_TEAM
from service.errors import AuthenticationError
from service.resources import Resources

log = structlog.get_logger(__name__)

LAST_USE_GRANULARITY = timedelta(minutes=1)
MAX_CACHED = 10_000


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def static_key_index(token: str, keys_: tuple[str, ...]) -> int | None:
    """The position of `token` in `keys_` (constant time over all of them), or None."""
    given = token.encode()
    found: int | None = None
    for index, key in enumerate(keys_):
        if hmac.compare_digest(given, key.encode()):
            found = index
    return found


def key_matches(token: str, keys_: tuple[str, ...]) -> bool:
    return static_key_index(token, keys_) is not None


class Authenticator:
    """One per app: turns a bearer token into a `Principal`, or raises 401."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._ttl = resources.settings.api_key_cache_seconds
        # digest of a key → (monotonic expiry, principal)
        self._cache: dict[str, tuple[float, Principal]] = {}
        # key id → monotonic time this process last wrote its last use
        self._noted: dict[str, float] = {}

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
        static = self._resources.settings.api_key_values()
        index = static_key_index(token, static) if static else None
        if index is not None:
            # The idempotency scope stays what it was before teams (a digest of the key);
            # the public id names the key by its place in API_KEYS, never by its value.
            return Principal(
                key_id=f"API_KEYS#{index + 1}",
                team=DEFAULT_TEAM,
                role=Role.ADMIN,
                scope_id=hashlib.sha256(token.encode()).hexdigest()[:32],
            )
        key_id = keys.key_id_of(token)
        if key_id is None:
            raise AuthenticationError("invalid API key")
        principal = await self._stored(token, key_id)
        await self._note_use(principal.key_id)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop what this process remembers of a key (it was just revoked here)."""
        for digest, (_, principal) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]

    async def _stored(self, token: str, key_id: str) -> Principal:
        digest = keys.digest(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._resources.database.read() as conn:
            stored = await key_store.find_by_id(conn, key_id)
        # The id only finds the row; the digest decides, compared in constant time.
        if stored is None or not hmac.compare_digest(stored.secret_hash, digest):
            raise AuthenticationError("invalid API key")
        if stored.key.revoked_at is not None:
            self._cache.pop(digest, None)
            raise AuthenticationError("this API key has been revoked")
        principal = Principal(stored.key.id, stored.key.team, stored.key.role)
        if self._ttl > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    async def _note_use(self, key_id: str) -> None:
        now = time.monotonic()
        noted = self._noted.get(key_id)
        if noted is not None and now - noted < LAST_USE_GRANULARITY.total_seconds():
            return
        self._noted[key_id] = now
        try:
            async with self._resources.database.transaction() as conn:
                await key_store.note_use(
                    conn,
                    key_id,
                    now=self._resources.clock.now(),
                    granularity=LAST_USE_GRANULARITY,
                )
        except Exception as exc:  # a missed last-use time must not fail the request
            log.warning("api_key.last_use_not_written", key_id=key_id, error=type(exc).__name__)


async def record_caller(scope: Scope) -> Principal:
    """Authenticate the request of `scope`; put its principal, and the caller id that
    scopes idempotency keys, in its state (401 otherwise). Used by `ApiKeyMiddleware` and
    by the hot routes."""
    state = scope["state"]
    authenticator: Authenticator = state["authenticator"]
    principal = await authenticator.authenticate(bearer_token(Request(scope)))
    state["principal"] = principal
    state["caller"] = principal.scope_id or principal.key_id
    return principal


def required_role(method: str, path: str) -> Role:
    """The least role a request under `/api` needs (`path` below the mount)."""
    if path.startswith(("/keys", "/webhook-targets")):
        return Role.ADMIN
    if method in ("GET", "HEAD"):
        return Role.VIEWER
    return Role.OPERATOR


class ApiKeyMiddleware:
    """Guards everything mounted under it: authenticates (401), then checks the role the
    route needs (403). Which team's data a request may see is the endpoints' business."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            principal = await record_caller(scope)
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            below = path[len(root) :] if root and path.startswith(root) else path
            principal.require(required_role(scope["method"], below))
        await self.app(scope, receive, send)
