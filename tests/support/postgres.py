"""What tests do to a PostgreSQL server from outside the service."""

from __future__ import annotations

import asyncpg


async def terminate_other_backends(url: str) -> int:
    """End every other session connected to the database at `url` (as a server restart or
    an idle timeout would); returns how many were ended."""
    admin = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        ended = await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    return int(ended)
