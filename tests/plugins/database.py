"""Database fixtures: every store test runs on SQLite and on a real PostgreSQL server.

PostgreSQL comes from `TEST_POSTGRES_URL` (an asyncpg SQLAlchemy URL of a role allowed to
create databases); each test gets a database of its own, dropped afterwards. Without the
variable the PostgreSQL cases are skipped locally, but fail under `CI=true`: CI must never
pass while silently skipping PostgreSQL.

The leak check: every connection the service opens comes from its `Database` (the pool,
or `open_sqlite_connection` for the SQLite fast paths: the point reader, the webhook
writer), and `Database.close()` notes (and logs as a warning) any connection still
checked out of the pool or plain SQLite connection still open: a leaked connection is a
bug. Every test fails on such a warning (`no_database_closed_with_connections_open`),
whichever `Database` it was: a fixture's, the test's own, or one the service opened
inside an app under test. A test that needs a `Database` of its own (a second process,
options in the URL, a database nobody answers for) opens it with the `open_database`
fixture, never `Database.from_url`, so that it is surely closed
(`tests/unit/test_leak_check_coverage.py` holds to that).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.db.engine import Database
from service.db.migrations import upgrade_to_head

POSTGRES_ENV = "TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = f"{POSTGRES_ENV} is not set: PostgreSQL tests cannot run"
        if _in_ci():
            pytest.fail(message + " (required when CI=true)")
        pytest.skip(message)
    return url


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_postgres_database() -> str:
    """Create an empty database for one test and return its SQLAlchemy URL."""
    admin_url = postgres_admin_url()
    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {POSTGRES_ENV} is unreachable: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_admin_url()))
    try:
        for _ in range(100):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                # An autovacuum worker (a superuser process a non-superuser test role may not
                # terminate) is visiting the database; it leaves within moments.
                await asyncio.sleep(0.1)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """An empty database (no schema) on each engine."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/test.db"
        return
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


def assert_no_leaked_connections(database: Database) -> None:
    """Mid-test: no connection of the pool is checked out now."""
    checked_out = database.engine.pool.checkedout()  # type: ignore[attr-defined]
    assert checked_out == 0, f"{checked_out} database connection(s) leaked by the test"


class _LeakWarnings(logging.Handler):
    """Notes every `database.closed_with_connections_open` the service logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg if isinstance(record.msg, dict) else {}
        if event.get("event") == "database.closed_with_connections_open":
            self.seen.append(event.get("left_open"))


_leak_warnings = _LeakWarnings()
logging.getLogger(Database.__module__).addHandler(_leak_warnings)


@pytest.fixture(autouse=True)
def no_database_closed_with_connections_open(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every `Database` closed during a test, wherever it was opened (a fixture, the
    test's own `open_database`, or the service's `open_resources` inside an app under
    test), closed with nothing left open: `Database.close()` logs each leak. (Not for
    the tests marked `leaks_connections`, which leak on purpose.)"""
    before = len(_leak_warnings.seen)
    yield
    if request.node.get_closest_marker("leaks_connections"):
        return
    leaks = _leak_warnings.seen[before:]
    assert not leaks, f"a database closed with connections left open: {leaks}"


OpenDatabase = Callable[..., Database]


@pytest.fixture
async def open_database() -> AsyncIterator[OpenDatabase]:
    """`open_database(url, **options)`: a `Database` of the test's own (the arguments of
    `Database.from_url`), closed after the test unless the test closed it."""
    opened: list[Database] = []

    def open_(url: str, **options: Any) -> Database:
        database = Database.from_url(url, **options)
        opened.append(database)
        return database

    yield open_
    for database in opened:
        await database.close()


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def database(empty_database: Database) -> Database:
    """A database migrated to the code's head revision."""
    await upgrade_to_head(empty_database.engine)
    return empty_database


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An empty PostgreSQL database, for tests of what only PostgreSQL does."""
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture
async def postgres_database(postgres_url: str) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database (see `postgres_url`)."""
    database = Database.from_url(postgres_url)
    try:
        await upgrade_to_head(database.engine)
        yield database
    finally:
        await database.close()
