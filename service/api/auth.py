"""API-key authentication for `/api`: `Authorization: Bearer <key>` against `API_KEYS`.

Every configured key is compared in constant time (no early exit on the first match), so
timing tells nothing about which key, or how much of one, was right. With no key
configured, `/api` refuses everything: there is no unauthenticated mode.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import AuthenticationError


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token: str, keys: tuple[str, ...]) -> bool:
    given = token.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def authenticate(request: Request, keys: tuple[str, ...]) -> str:
    """Return a stable, non-secret id of the caller's key; raise 401 otherwise."""
    if not keys:
        raise AuthenticationError("no API keys are configured on this service (set API_KEYS)")
    token = bearer_token(request)
    if token is None:
        raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
    if not key_matches(token, keys):
        raise AuthenticationError("invalid API key")
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def record_caller(scope: Scope) -> None:
    """Authenticate the request of `scope`; put the caller's key id in its state (401
    otherwise). Used by `ApiKeyMiddleware` and by the hot routes."""
    state = scope["state"]
    keys = state["resources"].settings.api_key_values()
    state["caller"] = authenticate(Request(scope), keys)


class ApiKeyMiddleware:
    """Guards everything mounted under it; records the caller's key id in the request state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            record_caller(scope)
        await self.app(scope, receive, send)
