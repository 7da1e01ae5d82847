"""Rate limiter: the sliding window, priorities, 429 pause and backlog, on looptime's
virtual event-loop time."""

from __future__ import annotations

import asyncio

import pytest

from service.novita.limiter import HEADROOM, Priority, RateLimiter

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


async def test_callers_past_the_budget_wait_for_the_window_to_move() -> None:
    limiter = make_limiter(60)
    started = await start_times(limiter, 63)
    assert started[:60] == [0.0] * 60
    # Never more than the budget in any 60 s: the next ones when the first leave it.
    assert started[60:] == pytest.approx([60.0, 60.0, 60.0], abs=0.01)


async def test_a_steady_caller_gets_the_steady_rate() -> None:
    limiter = make_limiter(60)
    started = []
    for _ in range(70):
        await limiter.acquire()
        started.append(loop_time())
        await asyncio.sleep(1.0)
    assert started[-1] == pytest.approx(69.0, abs=0.01)  # one a second: never waited


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
    await asyncio.sleep(60.1)  # 2 per minute: the first two leave the window at 60 s
    assert limiter.backlog == 1
    await asyncio.gather(*waiters)
    assert limiter.backlog == 0
    assert loop_time() == pytest.approx(120.0, abs=0.01)


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


# -- priorities ------------------------------------------------------------------------


async def spend_burst(limiter: RateLimiter) -> None:
    for _ in range(limiter.per_minute):
        await limiter.acquire()


async def test_a_more_urgent_class_is_served_first_whatever_the_arrival_order() -> None:
    limiter = make_limiter(60)
    await spend_burst(limiter)  # from now on one slot a second
    served: list[str] = []

    async def caller(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        served.append(name)

    tasks = []
    for name, priority in [
        ("b1", Priority.BACKGROUND),
        ("t1", Priority.TRANSITIONAL),
        ("b2", Priority.BACKGROUND),
        ("u1", Priority.URGENT),
        ("t2", Priority.TRANSITIONAL),
        ("u2", Priority.URGENT),
    ]:
        tasks.append(asyncio.create_task(caller(name, priority)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert served == ["u1", "u2", "t1", "t2", "b1", "b2"]


async def test_an_urgent_caller_arriving_late_overtakes_the_waiting_background() -> None:
    limiter = make_limiter(60)
    await spend_burst(limiter)
    started: dict[str, float] = {}

    async def caller(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        started[name] = loop_time()

    background = [
        asyncio.create_task(caller(f"b{n}", Priority.BACKGROUND)) for n in range(100)
    ]
    await asyncio.sleep(65.5)
    urgent = asyncio.create_task(caller("u", Priority.URGENT))
    await asyncio.gather(urgent, *background)
    # The urgent one starts at once (the background leaves it headroom), not after the
    # background callers queued before it.
    assert started["u"] == pytest.approx(65.5, abs=0.01)
    assert sum(1 for name, at in started.items() if name != "u" and at > started["u"]) >= 20


async def test_background_leaves_headroom_for_the_classes_above_it() -> None:
    limiter = make_limiter(100)
    reserve = round(100 * HEADROOM[Priority.BACKGROUND])
    background = [asyncio.create_task(limiter.acquire(Priority.BACKGROUND)) for _ in range(150)]
    await asyncio.sleep(0.01)
    # The background burst stops short of the budget...
    assert limiter.granted_by_priority[Priority.BACKGROUND] == 100 - reserve
    # ...so a burst of creates starts at once, without waiting behind it.
    urgent_started = await start_times_with(limiter, reserve, Priority.URGENT)
    assert max(urgent_started) - min(urgent_started) == pytest.approx(0.0, abs=0.01)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)


async def start_times_with(limiter: RateLimiter, callers: int, priority: Priority) -> list[float]:
    started: list[float] = []

    async def caller() -> None:
        await limiter.acquire(priority)
        started.append(loop_time())

    await asyncio.gather(*(caller() for _ in range(callers)))
    return started


async def test_a_mix_of_classes_never_exceeds_the_budget() -> None:
    """In any 60 s, at most the budget starts, whatever the classes asking."""
    per_minute = 30
    limiter = make_limiter(per_minute)
    starts: list[float] = []

    async def caller(priority: Priority, delay: float) -> None:
        await asyncio.sleep(delay)
        await limiter.acquire(priority)
        starts.append(loop_time())

    classes = list(Priority)
    await asyncio.gather(
        *(caller(classes[n % 3], (n * 7 % 50) / 10) for n in range(150))
    )
    starts.sort()
    assert len(starts) == 150
    for i in range(len(starts) - per_minute):
        assert starts[i + per_minute] - starts[i] >= 60.0 - 0.01


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    limiter = make_limiter(60)
    await spend_burst(limiter)
    first = asyncio.create_task(limiter.acquire(Priority.URGENT))
    second = asyncio.create_task(limiter.acquire(Priority.URGENT))
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert loop_time() == pytest.approx(60.0, abs=0.01)  # the first free place is its own
    assert limiter.started_within() == 1
    assert limiter.backlog == 0


async def test_a_429_pause_holds_the_urgent_too() -> None:
    limiter = make_limiter(100)
    limiter.pause(3.0)
    urgent = asyncio.create_task(limiter.acquire(Priority.URGENT))
    await asyncio.sleep(2.9)
    assert not urgent.done()
    await urgent
    assert loop_time() == pytest.approx(3.0, abs=0.01)
