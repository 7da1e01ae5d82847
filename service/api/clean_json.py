"""The one JSON parser for everything sent to the service: API bodies and provider webhooks.

orjson parses. It already refuses invalid UTF-8, lone surrogates (`"\\ud800"`), NaN and
Infinity, numbers that overflow a double (a 5,000-digit integer) and nesting past 1,024
levels, all without recursion in Python. One walk over the result, with an explicit stack
(a sender chooses how deep its JSON nests), then refuses what parses but cannot be stored
and read back on both databases or by every client:

- nesting deeper than `MAX_DEPTH` levels (no body of this API needs more than a few);
- a NUL character (`\\u0000`) in any string or key: PostgreSQL's text and jsonb cannot
  hold one;
- a number beyond ±`MAX_SAFE_INTEGER` (2^53 - 1) in an API body: larger integers lose
  digits in every JSON reader that uses doubles (JavaScript, orjson above 2^64), so what
  we echo or store would not read back as sent. No field of this API takes such a number.
  Provider events keep any number a double holds (`max_magnitude=None`): they are stored
  as sent and only read by us;
- a number with more than 16,383 digits after the point (`1e-16384`): PostgreSQL's
  numeric, behind jsonb, cannot hold it (orjson reads it as 0.0, so only the text tells;
  a cheap scan finds candidates, the standard library's parser checks them).

`loads` answers with the first problem and where it is (`labels.team`, `envs[0].value`),
so each caller can refuse with its own status: 422 naming the field for the REST API,
400 for a webhook.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
MAX_FRACTION_DIGITS = 16383  # PostgreSQL numeric's limit after the decimal point
# Every number past that limit has an exponent of at least 5 digits or a fraction of at
# least 6,384 (16,383 - 9,999) digits: only bodies holding one of these are re-checked.
_LONG_NEGATIVE_EXPONENT = re.compile(rb"[eE]-[0-9]{5}")
_LONG_FRACTION = re.compile(rb"\.[0-9]{6384}")


class JsonSyntaxError(ValueError):
    """The bytes are not JSON orjson accepts (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class JsonProblem:
    """Parsed JSON holding something the service refuses to store (`path` names it)."""

    path: str
    message: str
    kind: str  # "depth" | "nul" | "number"


class UncleanJsonError(ValueError):
    def __init__(self, problem: JsonProblem) -> None:
        super().__init__(f"{problem.path}: {problem.message}")
        self.problem = problem


def loads(
    raw: bytes, *, max_depth: int = MAX_DEPTH, max_magnitude: float | None = MAX_SAFE_INTEGER
) -> Any:
    """Parse `raw`; `JsonSyntaxError` or `UncleanJsonError` when it cannot be accepted."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JsonSyntaxError(str(exc)) from None
    limit = float("inf") if max_magnitude is None else max_magnitude
    if (
        isinstance(value, dict | list)
        and _may_be_unclean(raw, max_depth, max_magnitude)
        and not _is_clean(value, max_depth, limit)
    ):
        raise UncleanJsonError(_locate(value, max_depth, limit))
    if _may_hold_tiny_number(raw) and _has_unstorable_fraction(raw):
        raise UncleanJsonError(
            JsonProblem(
                "body",
                f"holds a number with more than {MAX_FRACTION_DIGITS} digits after the point",
                "number",
            )
        )
    return value


def _may_be_unclean(raw: bytes, max_depth: int, max_magnitude: float | None) -> bool:
    """Whether the walk is needed, from the bytes alone (it is skipped for a typical
    webhook: no number bound, no `\\u0000` escape, the only way JSON can hold a NUL, and
    fewer brackets than the depth limit)."""
    return (
        max_magnitude is not None
        or b"\\u0000" in raw
        or raw.count(b"[") + raw.count(b"{") > max_depth
    )


def _may_hold_tiny_number(raw: bytes) -> bool:
    # Substring tests first: a regex scan costs more than the rest of a webhook's parse.
    if (b"e-" in raw or b"E-" in raw) and _LONG_NEGATIVE_EXPONENT.search(raw):
        return True
    return len(raw) > 6384 and _LONG_FRACTION.search(raw) is not None


def _has_unstorable_fraction(raw: bytes) -> bool:
    """The exact check, on the number texts (depth is already bounded, so the standard
    library's recursive parser is safe here)."""
    found = False

    def number(text: str) -> float:
        nonlocal found
        exponent = Decimal(text).as_tuple().exponent
        found = found or (isinstance(exponent, int) and exponent < -MAX_FRACTION_DIGITS)
        return 0.0

    json.loads(raw, parse_float=number)
    return found


def _is_clean(root: dict[str, Any] | list[Any], max_depth: int, limit: float) -> bool:
    """The fast walk: no paths kept (webhooks take this on every request)."""
    pending: list[tuple[Any, int]] = [(root, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > max_depth:
            return False
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return False
                if isinstance(item, dict | list):
                    pending.append((item, depth + 1))
                elif not _is_clean_scalar(item, limit):
                    return False
        else:
            for item in value:
                if isinstance(item, dict | list):
                    pending.append((item, depth + 1))
                elif not _is_clean_scalar(item, limit):
                    return False
    return True


def _is_clean_scalar(value: Any, limit: float) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return -limit <= value <= limit
    return True


def _locate(root: Any, max_depth: int, limit: float) -> JsonProblem:
    """The slow walk, only once something was found: the first problem and its path."""
    pending: list[tuple[Any, str, int]] = [(root, "", 1)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, dict | list) and depth > max_depth:
            return JsonProblem(path or "body", f"nests deeper than {max_depth} levels", "depth")
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                child = f"{path}.{key}" if path else key
                if "\x00" in key:
                    return JsonProblem(
                        _printable(path or "body"), "a key holds a NUL character", "nul"
                    )
                pending.append((item, child, depth + 1))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                pending.append((value[index], f"{path}[{index}]", depth + 1))
        elif not _is_clean_scalar(value, limit):
            where = _printable(path or "body")
            if isinstance(value, str):
                return JsonProblem(
                    where, "holds a NUL character (\\u0000), which cannot be stored", "nul"
                )
            return JsonProblem(
                where, f"is beyond ±{limit:.0f}, the largest number stored exactly", "number"
            )
    raise AssertionError("_locate called on clean JSON")


def _printable(path: str) -> str:
    """A path to name in an error: NUL spelled out, an absurd length cut."""
    path = path.replace("\x00", "\\u0000")
    return path if len(path) <= 200 else path[:200] + "…"
