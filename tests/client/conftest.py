"""Fixtures for the client kit: the real service as a subprocess, the client, node.

`lifecycle_service` runs `python -m service serve --simulator --migrate` once per session
on a free loopback port (`--port 0`; the port is read from uvicorn's start-up line) with a
temporary SQLite database and short worker intervals, so simulated instances reach
`running` / `ready` in about ten seconds of real time. Every wait on it is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from novita_lifecycle_client import Backoff, LifecycleClient
from tests.support.client_service import RunningService

API_KEY = "client-kit-test-key-0123456789"
WEBHOOK_SECRET = "whsec_Y2xpZW50LWtpdC10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5"
START_TIMEOUT = 60.0
_RUNNING = re.compile(r"Uvicorn running on (http://[\d.]+:\d+)")


def _service_env(database_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"NOVITA_API_KEY", "WEBHOOK_URL", "INBOUND_WEBHOOK_SECRETS"}
    }
    env.update(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{database_path}",
            "API_KEYS": API_KEY,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
            "RECONCILE_INTERVAL": "1",
            # The simulator is local: no need to pace calls as for Novita (100/min by
            # default), which would queue actions behind the polls of dozens of instances.
            "RATE_LIMIT_PER_MINUTE": "60000",
            "POLL_INTERVAL_TRANSITIONAL": "0.5",
            "READINESS_INTERVAL": "0.5",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "INFO",
        }
    )
    return env


@pytest.fixture(scope="session")
def lifecycle_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The whole service (API, workers, simulator) as its CLI runs it, for this session."""
    directory = tmp_path_factory.mktemp("lifecycle-service")
    log_path = directory / "service.log"
    command = [sys.executable, "-m", "service", "serve", "--simulator", "--migrate"]
    command += ["--host", "127.0.0.1", "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=_service_env(directory / "service.db"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = _wait_until_serving(process, log_path)
        yield RunningService(base_url, API_KEY, WEBHOOK_SECRET, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_serving(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited with {process.returncode}:\n{log_path.read_text()}")
        found = _RUNNING.search(log_path.read_text(errors="replace"))
        if found:
            base_url = found.group(1)
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
                assert response.status == 200
            return base_url
        time.sleep(0.1)
    pytest.fail(f"the service did not start in {START_TIMEOUT:g}s:\n{log_path.read_text()}")


@pytest.fixture
async def client(lifecycle_service: RunningService) -> AsyncIterator[LifecycleClient]:
    # Short polls: the simulator moves in seconds, and waits should notice it promptly.
    backoff = Backoff(initial=0.2, max_delay=1.0)
    async with LifecycleClient(
        lifecycle_service.base_url, lifecycle_service.api_key, backoff=backoff
    ) as client:
        yield client


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable (20+): skipped locally without it, a failure under CI=true."""
    path = shutil.which("node")
    reason = "node is not installed: the Node.js examples are not run"
    if path is not None:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
        if major >= 20:
            return path
        reason = f"node {version.stdout.strip()} is too old: the examples need Node.js 20+"
    if _ci():
        pytest.fail(reason + " (required when CI=true)")
    pytest.skip(reason)
