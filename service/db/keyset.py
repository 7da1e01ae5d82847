"""Keyset pagination: the one way a listing reads a page and knows whether another follows.

A listing has a stable order over a key of one or more columns (`(created_at, id)`, or
`(seq,)` within one instance's history). A page is the rows past the last key the client
saw, in that order, and `limit` of them; one row more is read, so that its presence says
whether a next page exists without a count. The client gets the last item's key back as
an opaque cursor (`service.cursors`) and sends it to ask for the next page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

T = TypeVar("T")
S = TypeVar("S", bound=sa.Select[Any])


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    # The key of the last item when another page follows (the next cursor); None: the end.
    next_key: tuple[Any, ...] | None


def _past(
    keys: Sequence[sa.ColumnElement[Any]], after: Sequence[Any], descending: bool
) -> sa.ColumnElement[bool]:
    """Rows after `after` in the order of `keys`: (k1 past v1) or (k1 = v1 and k2 past v2)...
    Spelled out (not a row-value comparison) so each bind takes its column's type."""
    column, value = keys[0], after[0]
    past: sa.ColumnElement[bool] = column < value if descending else column > value
    if len(keys) == 1:
        return past
    return sa.or_(past, sa.and_(column == value, _past(keys[1:], after[1:], descending)))


def page_query(
    query: S,
    keys: Sequence[sa.ColumnElement[Any]],
    *,
    after: Sequence[Any] | None,
    limit: int,
    descending: bool = False,
) -> S:
    """`query` narrowed to the rows past `after` (None: from the start), in the order of
    `keys`, at most `limit` + 1 of them (see `page_of`)."""
    if after is not None:
        query = query.where(_past(keys, after, descending))
    order = [key.desc() for key in keys] if descending else list(keys)
    return query.order_by(*order).limit(limit + 1)


def page_of(items: Sequence[T], limit: int, key: Callable[[T], tuple[Any, ...]]) -> Page[T]:
    """The page out of what `page_query` read: `limit` items, and the last one's key when
    the extra row showed that more follow."""
    if len(items) <= limit:
        return Page(list(items), None)
    kept = list(items[:limit])
    return Page(kept, key(kept[-1]))
