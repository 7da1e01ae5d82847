"""The examples in client-examples/ run against the real service, as a user would run them.

The slow ones (create-and-wait, batch creation; Python and Node.js) are started together
once per module and each test then collects its own run: they take the simulator's ~10 s
to reach `ready` once instead of four times. Receivers and monitors run per test, fed by
instances the test creates. Every wait is bounded; processes are always reaped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from novita_lifecycle_client import LifecycleClient
from tests.support.client_service import EXAMPLES, RunningService

PYTHON = EXAMPLES / "python"
NODE = EXAMPLES / "nodejs"
RUN_TIMEOUT = 120.0  # seconds; a bound, never a pace
LINE_TIMEOUT = 30.0
SPEC: dict[str, Any] = {"product_name": "RTX 4090 24GB", "template_id": "212"}


@dataclass
class ExampleRun:
    """One example process in the background, its output in files."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def finish(self, timeout: float = RUN_TIMEOUT) -> tuple[int, str, str]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} still running after {timeout:g}s:\n{self.stderr.read_text()}")
        return code, self.stdout.read_text(), self.stderr.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start(name: str, command: list[str], env: dict[str, str], directory: Path) -> ExampleRun:
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, cwd=directory)
    return ExampleRun(name, process, out, err)


@dataclass
class SlowRuns:
    runs: dict[str, ExampleRun]
    batch_ids: dict[str, str]

    def get(self, name: str) -> ExampleRun:
        return self.runs[name]


@pytest.fixture(scope="module")
def slow_runs(
    lifecycle_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlowRuns]:
    directory = tmp_path_factory.mktemp("examples")
    node = shutil.which("node")
    runs: dict[str, ExampleRun] = {}
    batch_ids: dict[str, str] = {}
    commands = {
        "python-create": [sys.executable, str(PYTHON / "create_and_wait.py")],
        "python-batch": [sys.executable, str(PYTHON / "batch_create.py")],
    }
    if node is not None:
        commands["node-create"] = [node, str(NODE / "create-and-wait.js")]
        commands["node-batch"] = [node, str(NODE / "batch-create.js")]
    try:
        for name, command in commands.items():
            extra = {"WAIT_TIMEOUT": "90"}
            if name.endswith("batch"):
                batch_ids[name] = f"{name}-{uuid.uuid4().hex[:6]}"
                extra |= {"BATCH_SIZE": "5", "CONCURRENCY": "2", "WAIT_FOR": "running"}
                extra["BATCH_ID"] = batch_ids[name]
            else:
                extra["INSTANCE_NAME"] = f"{name}-{uuid.uuid4().hex[:6]}"
            runs[name] = start(name, command, lifecycle_service.example_env(**extra), directory)
        yield SlowRuns(runs, batch_ids)
    finally:
        for run in runs.values():
            run.stop()


async def check_create_and_wait(run: ExampleRun, client: LifecycleClient) -> None:
    code, stdout, stderr = run.finish()
    assert code == 0, stderr
    instance = json.loads(stdout.strip().splitlines()[-1])
    assert instance["status"] == "ready", stderr
    assert instance["readyAt"] and instance["portMappings"]
    assert (await client.get(instance["id"]))["status"] == "ready"
    assert f"created {instance['id']}" in stderr


async def check_batch(run: ExampleRun, batch_id: str, client: LifecycleClient) -> None:
    code, stdout, stderr = run.finish()
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0, stderr
    assert summary["batch"] == batch_id and summary["requested"] == 5
    assert summary["outcomes"] == {"running": 5}, summary
    assert sorted(result["n"] for result in summary["instances"]) == [1, 2, 3, 4, 5]
    listed = {i["id"] async for i in client.list(labels={"batch": batch_id})}
    assert listed == {result["id"] for result in summary["instances"]}
    assert stderr.count(": running") == 5


async def test_python_create_and_wait_reaches_ready(
    slow_runs: SlowRuns, client: LifecycleClient
) -> None:
    await check_create_and_wait(slow_runs.get("python-create"), client)


async def test_python_batch_creates_five_and_reports_five_outcomes(
    slow_runs: SlowRuns, client: LifecycleClient
) -> None:
    await check_batch(slow_runs.get("python-batch"), slow_runs.batch_ids["python-batch"], client)


async def test_node_create_and_wait_reaches_ready(
    node: str, slow_runs: SlowRuns, client: LifecycleClient
) -> None:
    await check_create_and_wait(slow_runs.get("node-create"), client)


async def test_node_batch_creates_five_and_reports_five_outcomes(
    node: str, slow_runs: SlowRuns, client: LifecycleClient
) -> None:
    await check_batch(slow_runs.get("node-batch"), slow_runs.batch_ids["node-batch"], client)


# --- receivers and monitors: one process per test -------------------------------------------


class LiveExample:
    """An example process whose stdout the test reads line by line (bounded)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, command: list[str], env: dict[str, str]) -> LiveExample:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def line_matching(self, *parts: str) -> str:
        """The next stdout line containing every part (earlier lines are kept in `lines`)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(LINE_TIMEOUT):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"the example exited; output so far: {self.lines}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if all(part in line for part in parts):
                    return line

    async def stop(self) -> tuple[int, str]:
        """SIGTERM, as Ctrl-C would: the example should exit cleanly (0)."""
        if self.process.returncode is None:
            self.process.terminate()
        async with asyncio.timeout(15):
            _, stderr = await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode, stderr.decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.communicate()


async def post_forged(url: str) -> int:
    """A delivery signed with the wrong key: a verifying receiver answers 401."""
    body = b'{"type":"instance.ready","timestamp":"2027-01-01T00:00:00Z","data":{"id":"forged"}}'
    headers = {
        "webhook-id": "evt_forged",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,Zm9yZ2VkLXNpZ25hdHVyZS1mb3ItdGVzdHMtMDEyMzQ1Njc4OQ==",
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status


async def check_receiver(
    command: list[str], service: RunningService, client: LifecycleClient
) -> None:
    receiver = await LiveExample.start(command, service.example_env(RECEIVER_PORT="0"))
    try:
        first = await receiver.line_matching("listening on ")
        url = first.split("listening on ", 1)[1].strip()
        assert await post_forged(url) == 401

        created = await client.create(name=f"hook-{uuid.uuid4().hex[:6]}", webhook_url=url, **SPEC)
        line = await receiver.line_matching("instance.created", f"instance={created['id']}")
        assert "status=pending sequence=1 id=evt_" in line and "scheme=standard" in line
        assert not any("forged" in printed for printed in receiver.lines)
        async with asyncio.timeout(LINE_TIMEOUT):
            while True:  # the service saw the receiver's 2xx
                notes = [n async for n in client.list_notifications(instance_id=created["id"])]
                created_note = next(n for n in notes if n["type"] == "instance.created")
                if created_note["status"] == "delivered":
                    break
                await asyncio.sleep(0.2)
        code, stderr = await receiver.stop()
        assert code == 0, stderr
    finally:
        await receiver.kill()


async def check_monitor(
    command: list[str], service: RunningService, client: LifecycleClient
) -> None:
    monitor = await LiveExample.start(command, service.example_env(MONITOR_INTERVAL="0.3"))
    try:
        name = f"watched-{uuid.uuid4().hex[:6]}"
        created = await client.create(name=name, **SPEC)
        await monitor.line_matching(" + ", created["id"], name)
        moved = await monitor.line_matching(" ~ ", created["id"], " -> ")
        assert "pending -> provisioning" in moved or "-> running" in moved, moved
        code, stderr = await monitor.stop()
        assert code == 0, stderr
        assert "stopped;" in stderr
    finally:
        await monitor.kill()


async def test_python_receiver_verifies_and_prints_a_real_delivery(
    lifecycle_service: RunningService, client: LifecycleClient
) -> None:
    await check_receiver(
        [sys.executable, str(PYTHON / "webhook_receiver.py")], lifecycle_service, client
    )


async def test_node_receiver_verifies_and_prints_a_real_delivery(
    node: str, lifecycle_service: RunningService, client: LifecycleClient
) -> None:
    await check_receiver([node, str(NODE / "webhook-receiver.js")], lifecycle_service, client)


async def test_python_monitor_prints_new_instances_and_status_changes(
    lifecycle_service: RunningService, client: LifecycleClient
) -> None:
    await check_monitor([sys.executable, str(PYTHON / "monitor.py")], lifecycle_service, client)


async def test_node_monitor_prints_new_instances_and_status_changes(
    node: str, lifecycle_service: RunningService, client: LifecycleClient
) -> None:
    await check_monitor([node, str(NODE / "monitor.js")], lifecycle_service, client)


def test_the_node_kit_unit_tests_pass(node: str) -> None:
    """client-examples/nodejs/test: signatures, staleness, legacy, rotation, errors, backoff."""
    result = subprocess.run(
        [node, "--test", "test/lib.test.js"],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout


# --- stopping the slow examples part-way: SIGTERM, then their summary --------------------------


async def interrupted(
    name: str, command: list[str], env: dict[str, str], directory: Path, marker: str
) -> tuple[int, str, str]:
    """Start an example, SIGTERM it once `marker` is on its stderr, collect its output."""
    run = start(name, command, env, directory)
    try:
        async with asyncio.timeout(LINE_TIMEOUT):
            while marker not in run.stderr.read_text():
                assert run.process.poll() is None, run.stderr.read_text()
                await asyncio.sleep(0.05)
        run.process.send_signal(signal.SIGTERM)
        return run.finish(timeout=15)
    finally:
        run.stop()


def _interrupt_commands() -> list[Any]:
    commands = [
        ("python-create", [sys.executable, str(PYTHON / "create_and_wait.py")]),
        ("python-batch", [sys.executable, str(PYTHON / "batch_create.py")]),
    ]
    node = shutil.which("node")
    if node is not None:
        commands += [
            ("node-create", [node, str(NODE / "create-and-wait.js")]),
            ("node-batch", [node, str(NODE / "batch-create.js")]),
        ]
    return [pytest.param(name, command, id=name) for name, command in commands]


@pytest.mark.parametrize(("name", "command"), _interrupt_commands())
async def test_the_slow_examples_stop_on_sigterm_with_their_summary(
    name: str,
    command: list[str],
    lifecycle_service: RunningService,
    client: LifecycleClient,
    tmp_path: Path,
) -> None:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    # Waiting for `stopped` never ends on its own: only the signal stops these runs.
    env = lifecycle_service.example_env(WAIT_FOR="stopped", WAIT_TIMEOUT="600")
    if name.endswith("batch"):
        env |= {"BATCH_SIZE": "3", "CONCURRENCY": "3", "BATCH_ID": tag}
        code, stdout, stderr = await interrupted(name, command, env, tmp_path, "creating 3")
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["batch"] == tag and summary["requested"] == 3
        assert summary["outcomes"] == {"interrupted": 3}, summary
        assert sorted(result["n"] for result in summary["instances"]) == [1, 2, 3]
    else:
        env["INSTANCE_NAME"] = tag
        code, stdout, stderr = await interrupted(name, command, env, tmp_path, "created ")
        instance = json.loads(stdout.strip().splitlines()[-1])
        assert instance["name"] == tag
        assert (await client.get(instance["id"]))["name"] == tag
        assert f"interrupted: {instance['id']} is " in stderr
    assert code == 4, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
