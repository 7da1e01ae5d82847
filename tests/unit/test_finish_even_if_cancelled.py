"""`finish_even_if_cancelled`: the operation always runs to its end, and a cancellation of
the caller is never lost, whenever it arrives (a swallowed cancellation leaves a worker or
a stream poller running for ever after it was told to stop)."""

from __future__ import annotations

import asyncio

import pytest

from service.db.engine import finish_even_if_cancelled


async def test_a_cancellation_that_arrives_as_the_operation_ends_is_still_raised() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def operation() -> str:
        await gate
        finished.set()
        return "done"

    caller = asyncio.create_task(finish_even_if_cancelled(operation()))
    await asyncio.sleep(0)  # the caller now waits on the operation
    gate.set_result(None)
    await asyncio.sleep(0)  # the operation has ended; the caller has not resumed yet
    assert finished.is_set() and not caller.done()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_cancellation_mid_operation_waits_for_it_then_is_raised() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def operation() -> None:
        await gate
        finished.set()

    caller = asyncio.create_task(finish_even_if_cancelled(operation()))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    assert not caller.done(), "returned before the operation finished"
    gate.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished.is_set()


async def test_without_cancellation_the_result_comes_back() -> None:
    async def operation() -> int:
        await asyncio.sleep(0)
        return 7

    assert await finish_even_if_cancelled(operation()) == 7
