"""Polling: the backoff schedule (growing, jittered, capped) and `wait_until`, which stops
early on `failed`, honours Retry-After and never outlives its timeout. Time is injected:
the fake sleep advances a fake clock, nothing really waits."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from novita_lifecycle_client import (
    Backoff,
    InstanceFailedError,
    LifecycleClient,
    NotFoundError,
    TerminalStatusError,
    WaitTimeoutError,
)
from tests.support.fake_api import Answer, FakeApi, instance, running_fake_api


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_grows_by_its_factor_then_stays_at_the_cap() -> None:
    backoff = Backoff(initial=0.5, factor=2, max_delay=5, jitter=0)
    assert [backoff.delay(n) for n in range(7)] == [0.5, 1, 2, 4, 5, 5, 5]
    assert backoff.base(10_000) == 5  # no overflow however long the wait


def test_jitter_only_shortens_a_delay_by_at_most_its_fraction() -> None:
    backoff = Backoff(initial=1, factor=2, max_delay=8, jitter=0.25)
    delays = list(itertools.islice(backoff.delays(), 200))
    for attempt, delay in enumerate(delays):
        base = backoff.base(attempt)
        assert 0.75 * base <= delay <= base
    assert len({round(d, 6) for d in delays[4:]}) > 1, "capped delays still differ"


def test_jitter_uses_the_injected_random_source() -> None:
    backoff = Backoff(initial=2, factor=3, max_delay=100, jitter=0.5, random=lambda: 1.0)
    assert [backoff.delay(n) for n in range(3)] == [1.0, 3.0, 9.0]


@pytest.mark.parametrize(
    "arguments",
    [{"initial": 0}, {"initial": 2, "max_delay": 1}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_a_nonsensical_backoff_is_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**arguments)


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    async with running_fake_api() as api:
        yield api


@pytest.fixture
async def timed(fake: FakeApi) -> AsyncIterator[tuple[LifecycleClient, FakeTime]]:
    time = FakeTime()
    backoff = Backoff(initial=0.5, factor=2, max_delay=4, jitter=0.2, random=lambda: 0.5)
    async with LifecycleClient(
        fake.base_url, "k", backoff=backoff, sleep=time.sleep, clock=time.clock
    ) as client:
        yield client, time


async def test_polls_with_growing_jittered_capped_delays_until_the_status(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, time = timed
    fake.statuses("inst_1", *["provisioning"] * 6, "ready")
    seen: list[str] = []
    ready = await client.wait_until(
        "inst_1", "ready", timeout=60, on_poll=lambda i: seen.append(i["status"])
    )
    assert ready["status"] == "ready"
    assert seen == ["provisioning"] * 6 + ["ready"]
    # base 0.5, 1, 2, 4, 4, 4 less 10% jitter (random 0.5 x jitter 0.2)
    assert time.sleeps == pytest.approx([0.45, 0.9, 1.8, 3.6, 3.6, 3.6])


async def test_running_is_also_met_by_ready(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, _ = timed
    fake.statuses("inst_1", "provisioning", "ready")
    assert (await client.wait_until("inst_1", "running"))["status"] == "ready"


async def test_failed_stops_the_wait_at_once_with_the_reason(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, time = timed
    fake.statuses("inst_1", "provisioning")
    fake.plan("/api/instances/inst_1", Answer(200, instance("inst_1", "failed", "no_capacity")))
    with pytest.raises(InstanceFailedError) as caught:
        await client.wait_until("inst_1", "ready", timeout=600)
    assert "no_capacity" in str(caught.value)
    assert caught.value.instance is not None and caught.value.instance["status"] == "failed"
    assert len(time.sleeps) == 1


async def test_deleted_is_terminal_unless_awaited(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, _ = timed
    fake.statuses("inst_1", "deleted", "deleted")
    with pytest.raises(TerminalStatusError):
        await client.wait_until("inst_1", "ready")
    assert (await client.wait_until("inst_1", "deleted"))["status"] == "deleted"


async def test_timeout_polls_once_more_at_the_deadline_then_raises(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, time = timed
    fake.statuses("inst_1", *["provisioning"] * 20)
    with pytest.raises(WaitTimeoutError) as caught:
        await client.wait_until("inst_1", "ready", timeout=5)
    assert isinstance(caught.value, TimeoutError)
    assert sum(time.sleeps) == pytest.approx(5)  # the last sleep is cut to the deadline
    assert time.sleeps[-1] < 3.6
    assert caught.value.instance is not None


async def test_unavailable_answers_are_retried_no_sooner_than_retry_after(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, time = timed
    busy = {"error": {"code": "NOVITA_UNAVAILABLE", "message": "breaker open"}}
    fake.plan("/api/instances/inst_1", Answer(503, busy, {"Retry-After": "7"}))
    fake.statuses("inst_1", "running")
    assert (await client.wait_until("inst_1", "running", timeout=60))["status"] == "running"
    assert time.sleeps == [7.0]


async def test_an_unknown_instance_is_not_waited_for(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, time = timed
    fake.plan("/api/instances/nope", Answer(404, {"error": {"code": "INSTANCE_NOT_FOUND"}}))
    with pytest.raises(NotFoundError):
        await client.wait_until("nope", "ready")
    assert time.sleeps == []


async def test_unknown_statuses_are_refused_before_any_request(
    fake: FakeApi, timed: tuple[LifecycleClient, FakeTime]
) -> None:
    client, _ = timed
    with pytest.raises(ValueError, match="unknown statuses"):
        await client.wait_until("inst_1", "redy")
    assert fake.requests == []
