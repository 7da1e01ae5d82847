"""Rate limiter pacing, 429 pause and backlog, on looptime's virtual event-loop time."""

from __future__ import annotations

import asyncio

import pytest

from service.novita.limiter import RateLimiter

pytestmark = pytest.mark.looptime


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def make_limiter(per_minute: int) -> RateLimiter:
    return RateLimiter(per_minute, time=loop_time, sleep=asyncio.sleep)


async def start_times(limiter: RateLimiter, callers: int) -> list[float]:
    started: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        started.append(loop_time())

    await asyncio.gather(*(caller() for _ in range(callers)))
    return sorted(started)


async def test_a_burst_of_the_budget_starts_at_once() -> None:
    limiter = make_limiter(60)
    assert await start_times(limiter, 60) == [0.0] * 60


async def test_callers_past_the_budget_wait_at_the_steady_rate() -> None:
    limiter = make_limiter(60)  # one per second once the burst is spent
    started = await start_times(limiter, 63)
    assert started[:60] == [0.0] * 60
    assert started[60:] == pytest.approx([1.0, 2.0, 3.0], abs=0.01)


async def test_the_limiter_gates_starts_not_completion() -> None:
    limiter = make_limiter(100)
    in_flight = 0
    most_in_flight = 0

    async def request() -> None:
        nonlocal in_flight, most_in_flight
        await limiter.acquire()
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(30)  # a slow request holds no slot
        in_flight -= 1

    await asyncio.gather(*(request() for _ in range(20)))
    assert most_in_flight == 20
    assert loop_time() == pytest.approx(30.0)


async def test_backlog_counts_the_callers_waiting() -> None:
    limiter = make_limiter(2)
    await limiter.acquire()
    await limiter.acquire()
    assert limiter.backlog == 0
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert limiter.backlog == 3
    await asyncio.sleep(30)  # 2 per minute: one slot every 30 s
    assert limiter.backlog == 2
    await asyncio.gather(*waiters)
    assert limiter.backlog == 0
    assert loop_time() == pytest.approx(90.0, abs=0.01)


async def test_a_429_pause_holds_every_caller_until_it_ends() -> None:
    limiter = make_limiter(100)
    limiter.pause(5.0)
    assert limiter.paused_for == pytest.approx(5.0)
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(4)]
    await asyncio.sleep(0)
    assert limiter.backlog == 4
    await asyncio.sleep(4.9)
    assert limiter.backlog == 4
    await asyncio.gather(*tasks)
    assert loop_time() == pytest.approx(5.0, abs=0.01)
    assert limiter.backlog == 0
    assert limiter.paused_for == 0


async def test_a_pause_is_extended_not_shortened() -> None:
    limiter = make_limiter(100)
    limiter.pause(5.0)
    limiter.pause(1.0)
    assert limiter.paused_for == pytest.approx(5.0)
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(3)
    limiter.pause(10.0)  # a second 429 while the first pause runs
    await waiter
    assert loop_time() == pytest.approx(13.0, abs=0.01)
    assert limiter.times_paused == 2


async def test_a_recording_sleep_does_not_spin() -> None:
    """With a fake sleep that does not move time, a waiter sleeps once per pause and goes on."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(100, time=lambda: 0.0, sleep=record)
    limiter.pause(2.5)
    await limiter.acquire()
    assert slept == [2.5]
