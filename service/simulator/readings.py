"""Which reading of the ambiguous parts of Novita's API the simulator plays.

Where nobody knows what the real API does (docs/novita-facts.md), the simulator can answer
each plausible way, one switch per ambiguity, so tests can prove the client copes with all
of them. The defaults are the most likely reading. Changeable at run time like `Faults`
(Python attribute, `PUT /_sim/readings`, `simulate` options).

    switch        values (default first)
    page_base     "0": pageNum 0 is the first page, 1 the second (docs "≥ 0", novita CLI)
                  "1": pageNum 1 is the first page and 0 means the same page
                  "1-strict": pageNum 1 is the first page and 0 is refused (400)
    not_found     "400": 400 RESOURCE_NOT_FOUND (docs); "404-json": 404 with the JSON
                  error body; "404-text": 404 with a gateway's plain-text body
    error_reason  "field": `{code, reason, message, metadata}`; "message": no `reason`,
                  the token starts `message` ("INSUFFICIENT_RESOURCE: ...")
    regions       product `regions` as "names" ("US-CA-06 (California)"), "codes"
                  ("US-CA-06"), "ids" (cluster ids, "us-ca-06") or "objects" ({id, name})
    action_body   start/stop answer "state" ({instanceId, state}), "empty" ({}) or "none"
                  (200 with no body); restart/delete answer {} unless "none"
    name_filter   the list's `name` filter: "substring" (documented), "exact", "ignored"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

CHOICES: dict[str, tuple[str, ...]] = {
    "page_base": ("0", "1", "1-strict"),
    "not_found": ("400", "404-json", "404-text"),
    "error_reason": ("field", "message"),
    "regions": ("names", "codes", "ids", "objects"),
    "action_body": ("state", "empty", "none"),
    "name_filter": ("substring", "exact", "ignored"),
}

NOT_FOUND_TEXT = "404 page not found\n"


@dataclass
class Readings:
    page_base: str = "0"
    not_found: str = "400"
    error_reason: str = "field"
    regions: str = "names"
    action_body: str = "state"
    name_filter: str = "substring"

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            _check(name, value)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, checking names and values; raises ValueError."""
        known = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown reading {name!r}")
            _check(name, value)
        for name, value in changes.items():
            setattr(self, name, value)

    def copy(self) -> Readings:
        return Readings(**asdict(self))


def _check(name: str, value: Any) -> None:
    if value not in CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}")


def every_reading() -> list[tuple[str, Readings]]:
    """One configuration per non-default value (and the defaults): a test matrix."""
    matrix = [("default", Readings())]
    for name, values in CHOICES.items():
        for value in values[1:]:
            matrix.append((f"{name}={value}", Readings(**{name: value})))
    return matrix
