"""Query parameters: one set of types for every route (the input gate for query strings).

Each accessor returns a clean value or raises a 422 naming the parameter:

- `text`: a filter value; empty means "not given" (as a form sends it); at most
  `MAX_TEXT` characters; no NUL (`%00`), which PostgreSQL's text cannot hold.
- `integer`: ASCII digits only (`str.isdigit()` would take "²" and other scripts'
  digits), bounded, never converted when longer than its bound could be.
- `label_filters`: `KEY:VALUE` (or `KEY=VALUE`) with keys of the label alphabet, so a key
  can never break out of a JSON path.
- `sequence_cursor`: an events cursor, a position that fits the database's integer.
- `position_cursor`: a listing cursor (see `service.cursors`).

A refused value is echoed only when it is short and printable text.
"""

from __future__ import annotations

from datetime import datetime

from starlette.datastructures import QueryParams

from service.api.schemas import LABEL_KEY
from service.cursors import decode_position
from service.errors import ValidationFailedError

MAX_TEXT = 255
MAX_SEQUENCE = 2**31 - 1  # the events' `seq` column is a 32-bit integer on PostgreSQL
_ECHO_LIMIT = 100


def invalid(field: str, message: str, value: str | None = None) -> ValidationFailedError:
    entry: dict[str, object] = {"field": field, "message": message}
    if value is not None and len(value) <= _ECHO_LIMIT and value.isprintable():
        entry["value"] = value
    return ValidationFailedError([entry])


def _checked(name: str, value: str, max_length: int) -> str:
    if "\x00" in value:
        raise invalid(name, "holds a NUL character (%00), which no filter can match")
    if len(value) > max_length:
        raise invalid(name, f"is longer than {max_length} characters")
    return value


def is_ascii_number(text: str, max_digits: int) -> bool:
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


class Query:
    def __init__(self, params: QueryParams) -> None:
        self.params = params

    def text(self, name: str, *, max_length: int = MAX_TEXT) -> str | None:
        value = self.params.get(name)
        if not value:
            return None
        return _checked(name, value, max_length)

    def texts(self, name: str, *, max_length: int = MAX_TEXT) -> list[str]:
        """Every non-empty value of a repeatable parameter."""
        return [_checked(name, v, max_length) for v in self.params.getlist(name) if v]

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        raw = self.params.get(name)
        if raw is None:
            return default
        message = f"must be a whole number from {low} to {high}"
        if not is_ascii_number(raw, len(str(high))) or not low <= int(raw) <= high:
            raise invalid(name, message, raw)
        return int(raw)

    def label_filters(self, name: str = "label") -> tuple[tuple[str, str], ...]:
        pairs = []
        for raw in self.texts(name, max_length=MAX_TEXT + 64):
            # Keys hold neither ":" nor "=", so the first of them ends the key.
            cut = min((i for i in (raw.find(":"), raw.find("=")) if i >= 0), default=-1)
            key, value = (raw[:cut], raw[cut + 1 :]) if cut >= 0 else (raw, "")
            if cut < 0 or not key:
                raise invalid(name, "must be KEY:VALUE (or KEY=VALUE)", raw)
            if not LABEL_KEY.fullmatch(key):
                raise invalid(name, "the key must be 1-63 of letters, digits, . _ / -", raw)
            pairs.append((key, value))
        return tuple(pairs)

    def sequence_cursor(self, name: str = "cursor") -> int:
        """After this sequence number (0: from the start; past the largest a sequence can
        be: after every event)."""
        raw = self.params.get(name)
        if not raw:
            return 0
        if not is_ascii_number(raw, len(str(MAX_SEQUENCE))):
            raise invalid(name, "is not a cursor this API returned", raw)
        return min(int(raw), MAX_SEQUENCE)

    def position_cursor(self, name: str = "cursor") -> tuple[datetime, str] | None:
        raw = self.params.get(name)
        if not raw:
            return None
        try:
            return decode_position(raw)
        except ValueError:
            raise invalid(name, "is not a cursor this API returned", raw) from None
