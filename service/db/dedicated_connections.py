"""asyncpg connections a hot path keeps for itself, outside SQLAlchemy's pool.

The point lookups and the inbox writer each hold a few: no pool bookkeeping and no reset
query on every release. A connection that failed during an operation is dropped, never
reused. One that died while idle (a server restart, an idle timeout) fails only on its
next use; that use is repeated once on a new connection, so callers must hand in
operations that are safe to repeat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

# What a connection that died while idle raises on its next use.
CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    # A terminated backend's goodbye may still be arriving when the next query starts.
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    ConnectionError,
)


class DedicatedConnections:
    def __init__(self, dsn: str, **connect_options: Any) -> None:
        self._dsn = dsn
        self._connect_options = connect_options
        self.idle: list[Any] = []  # asyncpg connections (asyncpg ships no types)

    async def run(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """`operation(connection)` on an idle connection, or a new one."""
        while self.idle and self.idle[-1].is_closed():
            self.idle.pop()
        if self.idle:
            try:
                return await self._run_on(self.idle.pop(), operation)
            except CONNECTION_LOST:
                pass  # it died while idle: once more, on a new connection
        connection = await asyncpg.connect(self._dsn, **self._connect_options)
        return await self._run_on(connection, operation)

    async def _run_on(self, connection: Any, operation: Callable[[Any], Awaitable[T]]) -> T:
        try:
            result = await operation(connection)
        except BaseException:
            connection.terminate()
            raise
        self.idle.append(connection)
        return result

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            await connection.close()
