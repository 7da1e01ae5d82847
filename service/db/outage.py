"""Telling "the database is not reachable right now" apart from a bug.

An outage (a refused or dropped connection, a server shutting down or not yet accepting
connections, an exhausted pool, SQLite's lock held past the busy timeout) is answered 503
with Retry-After and logged as one line, without a traceback: the request may simply be
repeated. Anything else a database raises is a bug, answered 500 with its traceback logged.

SQLAlchemy wraps driver errors (`DBAPIError.orig`), asyncpg raises its own on the point
readers' and the inbox writer's dedicated connections, and a refused connection surfaces
as the operating system's `ConnectionError`: all of them are looked for, along the chain
of causes.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa_exc

# What a database outage raises at the top (the types the HTTP layer routes to its handler).
OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,  # no pooled connection within the pool's timeout
    sa_exc.DisconnectionError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    sqlite3.Error,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)

# Of those, the ones that always mean an outage wherever they are found in the chain.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # SQLite: locked, busy, I/O; PostgreSQL: server-side trouble
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    asyncpg.PostgresConnectionError,  # 08xxx: connection exceptions
    asyncpg.OperatorInterventionError,  # 57xxx: shutdown, cannot connect now, cancelled
    asyncpg.InsufficientResourcesError,  # 53xxx: too many connections, disk full
    asyncpg.InterfaceError,  # the connection is closed / in a broken state
    asyncpg.InternalClientError,  # a terminated backend's goodbye arriving mid-query
    sqlite3.OperationalError,  # "database is locked" past busy_timeout, disk I/O
    ConnectionError,  # refused, reset
    TimeoutError,  # connect timeout
    socket.gaierror,  # the host name does not resolve
)


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, the driver error SQLAlchemy wrapped, and their causes, in order."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        if isinstance(current, sa_exc.DBAPIError) and isinstance(current.orig, BaseException):
            yield current.orig
        current = current.__cause__ or current.__context__


def is_database_outage(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached now (not that a query is wrong)."""
    for link in causes(error):
        if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, _UNAVAILABLE):
            return True
    return False


def describe(error: BaseException) -> str:
    """One line naming the driver-level error: no SQL, no parameters, no traceback."""
    root = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    text = str(root).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(root).__name__}: {first}"[:300]
