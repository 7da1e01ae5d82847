"""A provider observation is never dated after we received it: a validly
signed event from the far future moves an instance no further than an event of now
would, and the next poll and later webhooks still count."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from service.db.models import instances
from service.domain import Status
from tests.plugins.service import ServiceUnderTest
from tests.support.inbound_webhooks import post, signed
from tests.support.lifecycle import Workers, create_running, history, status_of


def status_event(novita_id: str, status: str, **times: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"instanceId": novita_id, "status": status}
    if "observed_at" in times:
        data["observedAt"] = times["observed_at"]
    envelope: dict[str, Any] = {"type": "instance.status_changed", "data": data}
    if "timestamp" in times:
        envelope["timestamp"] = times["timestamp"]
    return envelope


@pytest.mark.parametrize(
    "times",
    [
        {"observed_at": "9999-12-31T23:59:59Z"},
        {"timestamp": "9999-12-31T23:59:59+00:00"},
        {"timestamp": 253402300799},  # Unix seconds, the last second of year 9999
        {"observed_at": "9999-12-31T23:59:59-14:00"},  # past the calendar's end in UTC
    ],
    ids=["observedAt", "timestamp", "unix-timestamp", "beyond-utc"],
)
async def test_a_future_dated_event_cannot_freeze_an_instance(
    service: ServiceUnderTest, times: dict[str, Any]
) -> None:
    workers = Workers(service)
    instance = await create_running(service, workers)
    novita_id = instance["novitaInstanceId"]

    # Signed, received now, saying `exited` as seen in year 9999: applied as of receipt.
    lie = status_event(novita_id, "exited", **times)
    assert (await post(service, *signed(service, lie)))[0] == 200
    await workers.applier.run_once()
    assert (await status_of(service, instance["id"]))["status"] == Status.STOPPED.value

    # The provider still runs it: the next poll is newer than that event and repairs it.
    await workers.settle(polls=2)
    repaired = await status_of(service, instance["id"])
    assert repaired["status"] == Status.RUNNING.value, repaired
    assert history_sources(await history(service, instance["id"]))[-1] == "reconciler"

    # And a later webhook of the present is applied, not counted as stale.
    service.clock.advance(1)
    now = service.clock.now().isoformat()
    later = status_event(novita_id, "exited", observed_at=now)
    assert (await post(service, *signed(service, later)))[0] == 200
    await workers.applier.run_once()
    assert (await status_of(service, instance["id"]))["status"] == Status.STOPPED.value
    assert history_sources(await history(service, instance["id"]))[-1] == "webhook"


def history_sources(events: list[dict[str, Any]]) -> list[str]:
    return [event["source"] for event in events]


async def test_a_future_time_recorded_before_times_were_bounded_does_not_block_repairs(
    service: ServiceUnderTest,
) -> None:
    """A row written by an earlier version with a year-9999 observation still heals: the
    poll and later webhooks ignore that time."""
    workers = Workers(service)
    instance = await create_running(service, workers)
    async with service.resources.database.transaction() as conn:
        await conn.execute(
            sa.update(instances)
            .where(instances.c.id == instance["id"])
            .values(
                status=Status.STOPPED.value,
                provider_observed_at=datetime(9999, 12, 31, tzinfo=UTC),
                next_check_at=service.clock.now(),
            )
        )
    await workers.settle(polls=2)
    assert (await status_of(service, instance["id"]))["status"] == Status.RUNNING.value

    async with service.resources.database.transaction() as conn:
        await conn.execute(
            sa.update(instances)
            .where(instances.c.id == instance["id"])
            .values(provider_observed_at=datetime(9999, 12, 31, tzinfo=UTC))
        )
    service.clock.advance(1)
    later = status_event(
        instance["novitaInstanceId"], "exited", observed_at=service.clock.now().isoformat()
    )
    assert (await post(service, *signed(service, later)))[0] == 200
    await workers.applier.run_once()
    assert (await status_of(service, instance["id"]))["status"] == Status.STOPPED.value
