"""The dashboard's sign-in session: a signed, expiring cookie that never holds the key.

The cookie carries a fingerprint of the API key (an HMAC under the session secret, so a
stolen cookie does not even allow guessing the key offline), a CSRF token and the time
of sign-in, signed with itsdangerous. Every request checks the signature and age, then
that the fingerprint still belongs to one of the configured keys: removing a key from
API_KEYS signs out everyone who used it. The cookie is HttpOnly, SameSite=Strict, scoped
to /dashboard, and Secure when the page came over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from service.settings import Settings

COOKIE = "nl_dashboard"
COOKIE_PATH = "/dashboard"
_SALT = "novita-lifecycle.dashboard.session"


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    key_id: str | None = None  # None: not signed in (the sign-in form's session)

    @property
    def signed_in(self) -> bool:
        return self.key_id is not None


def session_secret(settings: Settings) -> bytes:
    """DASHBOARD_SECRET, or one derived from the API keys (the same in every process)."""
    if settings.dashboard_secret is not None:
        return settings.dashboard_secret.get_secret_value().encode()
    material = "\0".join(sorted(settings.api_key_values())).encode()
    return hashlib.sha256(b"novita-lifecycle dashboard session\0" + material).digest()


def key_id(secret: bytes, api_key: str) -> str:
    return hmac.new(secret, api_key.encode(), hashlib.sha256).hexdigest()[:32]


def key_still_valid(secret: bytes, fingerprint: str, keys: tuple[str, ...]) -> bool:
    """Constant time over every configured key, like the API's own check."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(fingerprint, key_id(secret, key))
    return matched


class SessionCookie:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = session_secret(settings)
        self.max_age = settings.dashboard_session_minutes * 60
        self._serializer = URLSafeTimedSerializer(self.secret, salt=_SALT)

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw or len(raw) > 4096:
            return None
        try:
            data: Any = self._serializer.loads(raw, max_age=self.max_age)
        except BadSignature:  # also expired (SignatureExpired is a BadSignature)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        fingerprint = data.get("k")
        if fingerprint is not None and (
            not isinstance(fingerprint, str)
            or not key_still_valid(self.secret, fingerprint, self.settings.api_key_values())
        ):
            return None
        return Session(csrf=data["c"], key_id=fingerprint)

    def new(self, api_key: str | None = None) -> Session:
        fingerprint = key_id(self.secret, api_key) if api_key is not None else None
        return Session(csrf=secrets.token_urlsafe(24), key_id=fingerprint)

    def write(self, response: Response, request: Request, session: Session) -> None:
        value = self._serializer.dumps({"c": session.csrf, "k": session.key_id})
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.max_age,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def clear(response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
