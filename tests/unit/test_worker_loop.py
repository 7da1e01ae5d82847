"""The worker loop: errors in one iteration are isolated, stop() lets the batch finish,
cancellation is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from service.workers.loop import WorkerGroup, WorkerLoop


class ScriptedWorker:
    """Runs a scripted sequence of outcomes: a number of items done, or an exception."""

    name = "scripted"

    def __init__(self, script: list[int | Exception]) -> None:
        self.script = script
        self.calls = 0
        self.exhausted = asyncio.Event()

    async def run_once(self) -> int:
        self.calls += 1
        if not self.script:
            self.exhausted.set()
            return 0
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_a_failing_iteration_does_not_end_the_loop() -> None:
    worker = ScriptedWorker([RuntimeError("boom"), 3, RuntimeError("again"), 1])
    loop = WorkerLoop(worker, idle_interval=0.001, error_backoff=0.001)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(worker.exhausted.wait(), timeout=5)
    loop.stop()
    await asyncio.wait_for(task, timeout=5)
    assert loop.failures == 2
    assert worker.calls >= 5


async def test_stop_lets_the_current_batch_finish() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    class SlowWorker:
        name = "slow"

        async def run_once(self) -> int:
            started.set()
            await release.wait()
            finished.append(True)
            return 1

    loop = WorkerLoop(SlowWorker(), idle_interval=10)
    group = WorkerGroup([loop], grace_period=5)
    group.start()
    await asyncio.wait_for(started.wait(), timeout=5)
    stopping = asyncio.create_task(group.stop())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert finished == [True], "the batch in progress completed before the loop ended"


async def test_cancellation_propagates() -> None:
    class BlockingWorker:
        name = "blocking"

        async def run_once(self) -> int:
            await asyncio.Event().wait()
            return 0

    task = asyncio.create_task(WorkerLoop(BlockingWorker()).run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_wake_skips_the_idle_wait() -> None:
    worker = ScriptedWorker([0, 0])
    loop = WorkerLoop(worker, idle_interval=3600)
    task = asyncio.create_task(loop.run())
    for _ in range(100):
        if worker.calls >= 1:
            break
        await asyncio.sleep(0)
    loop.wake()
    for _ in range(100):
        if worker.calls >= 2:
            break
        await asyncio.sleep(0.001)
    assert worker.calls >= 2, "wake() started the next batch without waiting an hour"
    loop.stop()
    await asyncio.wait_for(task, timeout=5)


async def test_after_work_the_busy_pause_is_kept_whatever_wakes_it() -> None:
    """A worker beside request handling rests after a batch that did work: the wakes of
    new work arriving meanwhile gather into its next batch; stop() still ends it at once."""
    worker = ScriptedWorker([5, 5, 5])
    loop = WorkerLoop(worker, idle_interval=3600, busy_pause=3600)
    task = asyncio.create_task(loop.run())
    for _ in range(100):
        if worker.calls >= 1:
            break
        await asyncio.sleep(0)
    for _ in range(20):
        loop.wake()
        await asyncio.sleep(0.001)
    assert worker.calls == 1, "a wake cut the rest after a batch short"
    loop.stop()
    await asyncio.wait_for(task, timeout=5)
    assert worker.calls == 1


async def test_a_database_outage_is_one_line_and_its_end_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    worker = ScriptedWorker([refused, refused, refused, 1, RuntimeError("a bug")])
    loop = WorkerLoop(worker, idle_interval=0.001, error_backoff=0.001)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(worker.exhausted.wait(), timeout=5)
    loop.stop()
    await asyncio.wait_for(task, timeout=5)
    lines = [
        (record.msg["event"], record.exc_info is not None)
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg["event"].startswith("worker.")
    ]
    assert lines == [
        ("worker.started", False),
        ("worker.database_unavailable", False),  # once for three failed passes
        ("worker.recovered", False),
        ("worker.iteration_failed", True),  # a bug keeps its traceback
        ("worker.recovered", False),
        ("worker.stopped", False),
    ]
