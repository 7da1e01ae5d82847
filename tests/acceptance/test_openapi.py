"""/openapi.json describes every route, and a schemathesis run against the real service
finds no 5xx and no response that breaks the document."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from service.api.openapi import build_document
from service.app import create_app
from service.settings import load_settings

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _routes() -> set[tuple[str, str]]:
    app = create_app(load_settings(novita_simulator=True))
    found = set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/dashboard":
            continue  # HTML pages for people, not the API
        children = route.routes if isinstance(route, Mount) else [route]
        prefix = route.path if isinstance(route, Mount) else ""
        for child in children:
            assert isinstance(child, Route)
            for method in child.methods or ():
                if method != "HEAD":
                    found.add((method.lower(), prefix + child.path))
    return found


def test_every_route_is_documented() -> None:
    documented = {
        (method, path)
        for path, operations in build_document()["paths"].items()
        for method in operations
    }
    assert _routes() - {("get", "/openapi.json")} == documented


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is a dev dependency")
async def test_schemathesis_finds_no_server_errors_or_schema_violations(
    tmp_path: Path, database_url: str
) -> None:
    """Every check schemathesis has, in every phase (stateful links included), on each
    database; the exceptions it is told about are in schemathesis.toml, each with why.
    Bounded here (a fixed seed, 25 examples per operation); README gives a longer run."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_KEYS": "schemathesis-key",
        "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "INBOUND_WEBHOOK_SECRETS": "whsec_aW5ib3VuZC1zZWNyZXQtZm9yLXRlc3RzLTAxMjM0NQ==",
        "LOG_LEVEL": "WARNING",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "serve",
        "--simulator",
        "--migrate",
        "--port",
        str(port),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        run = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "-H",
            "Authorization: Bearer schemathesis-key",
            "--checks",
            "all",
            "--exclude-checks",
            "use_after_free",  # why: see schemathesis.toml
            "--phases",
            "examples,coverage,fuzzing,stateful",
            # An endless stream: its own tests cover it (tests/acceptance/test_event_stream.py).
            "--exclude-path",
            "/api/events",
            "--max-examples",
            "25",
            "--seed",
            "20261122",
            "--no-color",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
        async with asyncio.timeout(600):
            output, _ = await run.communicate()
        report = output.decode()
        failures = report[report.find("FAILURES") :][:8000]
        assert run.returncode == 0, failures or report[-6000:]
        summary = report.split("Test cases:")[-1]
        assert " generated" in summary and "failure" not in summary, failures
        assert "Stateful" in report, "the stateful phase ran"
    finally:
        server.terminate()
        async with asyncio.timeout(30):
            await server.wait()
        shutil.rmtree(tmp_path / ".hypothesis", ignore_errors=True)
