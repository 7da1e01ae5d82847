"""Repeating an operation whose pooled connection turned out to be dead."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa

T = TypeVar("T")


async def once_more_if_disconnected(operation: Callable[[], Awaitable[T]]) -> T:
    """`operation()`, repeated once if its pooled connection turned out dead.

    A connection that died while idle in the pool (a server restart, an idle timeout)
    fails its first statement; SQLAlchemy invalidates it, so the repeat gets a new one.
    Only for operations that are safe to repeat.
    """
    try:
        return await operation()
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return await operation()
