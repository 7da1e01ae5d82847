"""A memo reads each key once however many ask at once, and again once it is stale."""

from __future__ import annotations

import asyncio

import pytest

from service.clock import ManualClock
from service.provisioning.memo import Memo


async def test_concurrent_misses_share_one_read() -> None:
    clock = ManualClock()
    memo: Memo[int] = Memo(clock, ttl=30)
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return reads

    values = await asyncio.gather(*(memo.get("k", read) for _ in range(50)))
    assert values == [1] * 50
    assert reads == 1
    clock.advance(31)
    assert await memo.get("k", read) == 2


async def test_a_failed_read_stores_nothing() -> None:
    memo: Memo[int] = Memo(ManualClock(), ttl=30)

    async def fail() -> int:
        raise RuntimeError("down")

    async def read() -> int:
        return 7

    with pytest.raises(RuntimeError):
        await memo.get("k", fail)
    assert await memo.get("k", read) == 7
