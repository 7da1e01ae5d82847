"""Messages a newcomer meets first say what to do, in words (issue 16, item 4)."""

from __future__ import annotations

from click.testing import CliRunner

from service.__main__ import cli
from service.db import repository as repo
from service.domain import EventSource, Status
from tests.plugins.service import ServiceUnderTest
from tests.support.provisioning import add_instance


def _fields(body: dict[str, object]) -> dict[str, dict[str, object]]:
    error = body["error"]
    assert isinstance(error, dict)
    return {entry["field"]: entry for entry in error["details"]["fields"]}


async def test_an_empty_body_names_every_required_field_at_once(
    service: ServiceUnderTest,
) -> None:
    status, body, _ = await service.call("POST", "/api/instances", json={})
    assert status == 422, body
    fields = _fields(body)
    assert {"name", "productName", "templateId"} <= set(fields), fields
    assert "productId" in str(fields["productName"]["message"])
    assert "imageUrl" in str(fields["templateId"]["message"])


async def test_a_long_name_gets_a_sentence_not_a_regular_expression(
    service: ServiceUnderTest,
) -> None:
    status, body, _ = await service.call(
        "POST",
        "/api/instances",
        json={"name": "n" * 150, "productName": "RTX 4090 24GB", "templateId": "212"},
    )
    assert status == 422, body
    message = str(_fields(body)["name"]["message"])
    assert "1-100 characters" in message
    assert "^" not in message and "pattern" not in message


async def test_restarting_a_stopped_instance_says_to_start_it(service: ServiceUnderTest) -> None:
    database, clock = service.resources.database, service.clock
    instance_id = await add_instance(database, clock)
    async with database.transaction() as conn:
        for status, changes in (
            (Status.PROVISIONING, {"novita_instance_id": "0123456789abcdef"}),
            (Status.STOPPED, None),
        ):
            await repo.change_status(
                conn, instance_id, status, source=EventSource.RECONCILER, now=clock.now(),
                changes=changes,
            )
    status, body, _ = await service.call("POST", f"/api/instances/{instance_id}/restart")
    assert status == 409, body
    message = body["error"]["message"]
    assert "is stopped" in message and "start it instead" in message
    assert "cannot become" not in message
    status, body, _ = await service.call("POST", f"/api/instances/{instance_id}/stop")
    assert status == 409 and "already stopped" in body["error"]["message"]


def test_an_unknown_report_names_the_argument_and_the_reports() -> None:
    result = CliRunner().invoke(cli, ["report", "bogus"])
    assert result.exit_code == 2
    assert "NAME: reports are: fleet" in result.output
    assert "--name" not in result.output


def test_the_top_level_help_lists_report() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    summary = result.output.split("Options:")[0]
    assert "report" in summary
    assert "  report " in result.output
