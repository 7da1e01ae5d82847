"""`migrate` and the schema check `serve` runs before starting, through the real CLI process."""

from __future__ import annotations

import pytest

from service.db.migrations import head_revision
from tests.support.cli import run_cli


async def test_migrate_then_serve_check_passes(database_url: str, tmp_path: object) -> None:
    result = await run_cli("migrate", database_url=database_url, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"is at revision {head_revision()}" in result.stdout
    again = await run_cli("migrate", database_url=database_url, cwd=str(tmp_path))
    assert again.returncode == 0, "migrating an up-to-date database is a no-op"


async def test_serve_refuses_an_unmigrated_database_and_says_what_to_run(
    database_url: str, tmp_path: object
) -> None:
    result = await run_cli("serve", "--simulator", database_url=database_url, cwd=str(tmp_path))
    assert result.returncode == 1
    assert "novita-lifecycle migrate" in result.stderr
    assert "serve --migrate" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["migrate", "serve --simulator"])
async def test_unreachable_database_is_one_clear_line(command: str, tmp_path: object) -> None:
    url = "postgresql+asyncpg://svc:hunter2@127.0.0.1:1/db"
    result = await run_cli(*command.split(), database_url=url, cwd=str(tmp_path))
    assert result.returncode == 1
    assert "cannot use the database at postgresql+asyncpg://svc:***@127.0.0.1:1/db" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
