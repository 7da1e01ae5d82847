"""Provider-side instance names that carry our instance id, so nothing we create can leak.

Novita names allow letters, digits and hyphens (docs/novita-facts.md), up to 255 characters.
Our ids are `inst_<32 hex>`; the underscore is not allowed, so the id is written
`inst-<32 hex>` and always placed last: `<client name slug>-inst-<32 hex>`. Reading the
id back only looks at that suffix, so whatever the client's name contains, the round
trip is exact, and a lookup by name (a substring match at Novita) finds exactly one id.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 255
# Room left for the client's name: readable in the console, far below Novita's limit.
_MAX_SLUG_LENGTH = 60
_ID_PATTERN = re.compile(r"^inst_([0-9a-f]{32})$")
_SUFFIX_PATTERN = re.compile(r"(?:^|-)inst-([0-9a-f]{32})$", re.IGNORECASE)
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9]+")


def _slug(name: str) -> str:
    slug = _NOT_ALLOWED.sub("-", name).strip("-")
    return slug[:_MAX_SLUG_LENGTH].rstrip("-")


def provider_name(instance_id: str, name: str) -> str:
    """The Novita name for our instance: the client's name made safe, then our id."""
    match = _ID_PATTERN.match(instance_id)
    if match is None:
        raise ValueError(f"not one of our instance ids: {instance_id!r}")
    suffix = f"inst-{match.group(1)}"
    slug = _slug(name)
    return f"{slug}-{suffix}" if slug else suffix


def instance_id_from_provider_name(name: str) -> str | None:
    """Our instance id if the Novita name carries one, else None (not ours)."""
    match = _SUFFIX_PATTERN.search(name.strip())
    if match is None:
        return None
    return f"inst_{match.group(1).lower()}"


def id_marker(instance_id: str) -> str:
    """The part of the provider name to search for (Novita's name filter is a substring)."""
    return provider_name(instance_id, "")
