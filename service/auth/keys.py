"""API key secrets: how they are made, recognised and hashed.

A key is `nlk_<id>_<secret>`: the recognisable prefix lets secret scanners and people spot
a leaked key; the id (public, 12 hex digits) names the key in listings, events and logs;
the secret is 32 random bytes from `secrets.token_urlsafe`. Only SHA-256 of the whole key
is stored.

Why a fast, unsalted hash is right here (unlike for passwords): a password is guessable,
so it needs a slow, salted hash to make each guess expensive. These keys are 256 bits
from the operating system's CSPRNG; nobody can enumerate them, however fast the hash, and
a stolen table of SHA-256 digests gives nothing back. A fast hash also keeps the check on
every request cheap, and lets the database find a key by its digest.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

PREFIX = "nlk_"
SECRET_BYTES = 32
_ID_HEX = 12
_KEY = re.compile(rf"^{PREFIX}([0-9a-f]{{{_ID_HEX}}})_[A-Za-z0-9_-]{{20,100}}$")
KEY_ID = re.compile(rf"^[0-9a-f]{{{_ID_HEX}}}$")


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    secret: str  # the whole key, as the client sends it; shown once, never stored

    @property
    def digest(self) -> str:
        return digest(self.secret)


def generate() -> NewKey:
    key_id = secrets.token_hex(_ID_HEX // 2)
    return NewKey(key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id inside a key of ours, or None when `key` does not look like one."""
    match = _KEY.match(key)
    return match.group(1) if match else None
