"""`novita-lifecycle keys` through the real CLI process, on both databases, and the
migration that brings teams to a database that has instances already."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection

from service.db.engine import Database
from service.db.migrations import alembic_config, upgrade_to_head
from tests.support.cli import run_cli


async def test_keys_create_list_revoke(database_url: str, tmp_path: object) -> None:
    cwd = str(tmp_path)
    assert (await run_cli("migrate", database_url=database_url, cwd=cwd)).returncode == 0
    made = await run_cli(
        "keys",
        "create",
        "--team",
        "ml",
        "--role",
        "operator",
        "--name",
        "ci job",
        database_url=database_url,
        cwd=cwd,
    )
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    secret = lines[-1]
    key_id = lines[0].removeprefix("key id: ")
    assert secret == f"{secret.split()[0]}" and secret.startswith(f"nlk_{key_id}_")
    assert "shown only this once" in lines[-2]
    assert [line for line in lines if secret in line] == [secret], "the key is on its own line"

    listed = await run_cli("keys", "list", database_url=database_url, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and "ml" in listed.stdout and "operator" in listed.stdout
    assert "never" in listed.stdout  # not used yet
    assert secret not in listed.stdout + listed.stderr
    assert secret[-20:] not in listed.stdout

    other = await run_cli("keys", "list", "--team", "vision", database_url=database_url, cwd=cwd)
    assert key_id not in other.stdout

    revoked = await run_cli("keys", "revoke", secret, database_url=database_url, cwd=cwd)
    assert revoked.returncode == 0, revoked.stderr
    assert key_id in revoked.stdout and secret not in revoked.stdout
    after = await run_cli("keys", "list", "--team", "ml", database_url=database_url, cwd=cwd)
    row = next(line for line in after.stdout.splitlines() if line.startswith(key_id))
    assert row.split()[-1].endswith("Z"), "the revocation time is listed"


async def test_keys_cli_refuses_bad_input_in_one_line(database_url: str, tmp_path: object) -> None:
    cwd = str(tmp_path)
    await run_cli("migrate", database_url=database_url, cwd=cwd)
    for args in [
        ("create", "--team", "ml", "--role", "root"),
        ("create", "--team", "bad team", "--role", "viewer"),
        ("create", "--team", "t" * 65, "--role", "viewer"),
        ("create", "--team", "ml", "--role", "viewer", "--name", "a\tb"),
        ("list", "--team", "no/slash"),
        ("revoke", "not-an-id"),
    ]:
        result = await run_cli("keys", *args, database_url=database_url, cwd=cwd)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    missing = await run_cli("keys", "revoke", "0123456789ab", database_url=database_url, cwd=cwd)
    assert missing.returncode == 1 and "no key with id 0123456789ab" in missing.stderr


async def test_existing_instances_join_the_default_team(empty_database: Database) -> None:
    engine = empty_database.engine

    def to_0007(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")

    async with engine.begin() as conn:
        await conn.run_sync(to_0007)
    now = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO instances (id, name, status, gpu_num, billing_mode, regions, ports,"
                " envs, labels, port_mappings, created_at, updated_at, event_seq, version)"
                " VALUES ('inst_old', 'old', 'pending', 1, 'onDemand', '[]', '[]', '[]', '{}',"
                " '[]', :now, :now, 0, 1)"
            ),
            {"now": now},
        )
    await upgrade_to_head(engine)
    async with engine.connect() as conn:
        team = await conn.scalar(sa.text("SELECT team FROM instances WHERE id = 'inst_old'"))
    assert team == "default"
