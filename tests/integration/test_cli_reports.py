"""`novita-lifecycle report` through the real CLI process, on both databases."""

from __future__ import annotations

import csv
import io
import json

from service.db.engine import Database
from tests.support.cli import run_cli
from tests.support.report_data import seed


def url_of(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


async def test_report_prints_csv_json_and_table(database: Database, tmp_path: object) -> None:
    await seed(database)
    window = ["--since", "2026-03-01", "--until", "2026-03-03"]
    result = await run_cli(
        "report", "usage", *window, "--group-by", "day", "--format", "csv",
        database_url=url_of(database), cwd=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["day", "gpu_hours", "cost_usd"],
        ["2026-03-01", "39.333333", "27.716667"],
        ["2026-03-02", "28.333333", "30.966667"],
    ]

    result = await run_cli(
        "report", "provisioning", *window, "--format", "json",
        database_url=url_of(database), cwd=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["sections"]["summary"]["rows"][0]["success_rate"] == 0.75
    assert document["sections"]["failure_reasons"]["rows"] == [
        {"reason": "no_capacity", "failures": 1},
        {"reason": "startup_timeout", "failures": 1},
    ]

    result = await run_cli(
        "report", "fleet", "--group-by", "status",
        database_url=url_of(database), cwd=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "== fleet =="
    assert result.stdout.splitlines()[3].split() == ["deleted", "1"]


async def test_bad_report_options_exit_2_with_one_line(
    database: Database, tmp_path: object
) -> None:
    for args in (
        ("report", "usage", "--since", "soon"),
        ("report", "costs"),
        ("report", "fleet", "--format", "xml"),
        ("report", "usage", "--section", "nope"),
    ):
        result = await run_cli(*args, database_url=url_of(database), cwd=str(tmp_path))
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    since = await run_cli(
        "report", "usage", "--since", "soon", database_url=url_of(database), cwd=str(tmp_path)
    )
    assert since.stderr.startswith("novita-lifecycle: --since: expected an ISO 8601 time")
