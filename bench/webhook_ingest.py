"""Inbound webhook ingest throughput: signed, unique webhooks per second into the inbox.

    .venv/bin/python bench/webhook_ingest.py --no-workers [--runs 5] [--duration 10]

Starts, side by side and each pinned to CPU 0: a bare Starlette endpoint that reads the
body and answers 200 (for scale), and `novita-lifecycle serve --simulator` (one uvicorn
worker) on SQLite and, when TEST_POSTGRES_URL is set or scripts/test-postgres.sh finds a
local server, on PostgreSQL. Then runs rounds: in each, wrk (pinned to CPU 1) replays
fresh pre-signed, unique Standard Webhooks requests against every target in turn, so
the figures of one round share the machine's state of the moment. Prints each round,
the medians, and each engine's median share of the bare endpoint's rate. Only 127.0.0.1
is ever targeted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.signatures import sign  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
SECRET = "whsec_" + base64.b64encode(b"bench-inbound-secret-0123456789ab").decode()
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
BARE = "bare starlette"
BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def receive(request):
    await request.body()
    return JSONResponse({"received": True})

app = Starlette(routes=[Route("/webhooks/novita", receive, methods=["POST"])])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def milliseconds(value: str) -> float:
    """wrk's latency figures: `850.00us`, `12.34ms`, `1.02s`."""
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def lua_script(path: Path, count: int) -> None:
    """`count` distinct signed requests for wrk, replayed in order.

    The requests go in a data file read at start-up: one Lua chunk holding them all
    would exceed LuaJIT's limit on constants per function.
    """
    now = int(time.time())
    data = path.with_suffix(".tsv")
    with data.open("w") as out:
        for n in range(count):
            msg_id = f"msg_{uuid.uuid4().hex}"
            body = json.dumps(
                {
                    "type": "instance.status_changed",
                    "timestamp": now,
                    "data": {"instanceId": f"{n:016x}", "status": "running"},
                },
                separators=(",", ":"),
            ).encode()
            out.write(f"{msg_id}\t{now}\t{sign(KEY, msg_id, now, body)}\t{body.decode()}\n")
    path.write_text(
        f"""
local reqs = {{}}
for line in io.lines("{data}") do
  local id, ts, sig, body = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)")
  reqs[#reqs + 1] = wrk.format("POST", "/webhooks/novita", {{
    ["Host"] = "127.0.0.1",
    ["Content-Type"] = "application/json",
    ["webhook-id"] = id,
    ["webhook-timestamp"] = ts,
    ["webhook-signature"] = sig,
  }}, body)
end
local i = 0
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
"""
    )


def run_wrk(port: int, script: Path, duration: int, connections: int) -> tuple[float, float]:
    output = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/webhooks/novita",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = p99 = 0.0
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec"):
            rate = float(parts[1])
        elif parts and parts[0] == "99%":
            p99 = milliseconds(parts[1])
    non_2xx = [line for line in output.splitlines() if "Non-2xx" in line]
    if non_2xx:
        raise RuntimeError(f"the server refused requests: {non_2xx[0].strip()}")
    return rate, p99


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    rates: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)


def start(name: str, command: list[str], env: dict[str, str], port: int, work: Path) -> Target:
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"{name}.log", "w"),
    )
    return Target(name, port, process)


def measure(targets: list[Target], args: argparse.Namespace, work: Path) -> None:
    """Rounds of one run per target, back to back, so each round's figures share the
    machine's state of the moment (its speed drifts by a third over an hour)."""
    for target in targets:
        wait_listening(target.port)
    for round_number in range(1, args.runs + 1):
        script = work / "requests.lua"
        lua_script(script, int(args.requests))  # fresh timestamps, new ids
        line = []
        for target in targets:
            rate, p99 = run_wrk(target.port, script, args.duration, args.connections)
            target.rates.append(rate)
            target.p99s.append(p99)
            line.append(f"{target.name} {rate:,.0f}/s p99 {p99:.1f} ms")
        print(f"round {round_number}: " + " | ".join(line), flush=True)
    for target in targets:
        print(
            f"{target.name}: median {statistics.median(target.rates):,.0f} req/s, "
            f"median p99 {statistics.median(target.p99s):.1f} ms"
        )
    bare = next((target for target in targets if target.name == BARE), None)
    if bare is not None:
        for target in targets:
            if target is not bare:
                ratios = [
                    mine / theirs for mine, theirs in zip(target.rates, bare.rates, strict=True)
                ]
                print(f"{target.name} / {BARE}: median {statistics.median(ratios):.0%} per round")


def postgres_url() -> str | None:
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        return url
    found = subprocess.run(
        [str(ROOT / "scripts" / "test-postgres.sh")], capture_output=True, text=True, check=False
    ).stdout
    return found.split("=", 1)[1].strip().strip("'") if "=" in found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--no-workers",
        action="store_true",
        help="serve --no-workers: measure ingest without the applier beside it",
    )
    parser.add_argument("--skip-bare", action="store_true", help="skip the bare endpoint")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--runs", type=int, default=5, help="rounds (one run per target each)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--requests",
        type=int,
        default=150_000,
        help="distinct signed requests per run (more than a run sends)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk (apt-get install -y wrk)")
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))

    targets = []
    if not args.skip_bare:
        bare_port = free_port()
        (work / "bare_app.py").write_text(BARE_APP)
        targets.append(
            start(
                BARE,
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "bare_app:app",
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                {**os.environ, "PYTHONPATH": str(work)},
                bare_port,
                work,
            )
        )

    engines = [("sqlite", f"sqlite+aiosqlite:///{work}/ingest.db")]
    pg = postgres_url() if not args.sqlite_only else None
    if pg:
        import asyncio

        import asyncpg

        db = f"ingest_bench_{os.getpid()}"
        admin = pg.replace("+asyncpg", "")

        async def admin_sql(sql: str) -> None:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{db}"'))
        asyncio.run(admin_sql(f'CREATE DATABASE "{db}"'))
        engines.append(("postgresql", pg.rsplit("/", 1)[0] + f"/{db}"))
    for engine, url in engines:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "INBOUND_WEBHOOK_SECRETS": SECRET,
            "API_KEYS": "bench",
            "LOG_LEVEL": "WARNING",
        }
        targets.append(
            start(
                f"ingest on {engine}",
                [
                    PYTHON,
                    "-m",
                    "service",
                    "serve",
                    "--simulator",
                    "--migrate",
                    *(["--no-workers"] if args.no_workers else []),
                    "--port",
                    str(port),
                ],
                env,
                port,
                work,
            )
        )
    try:
        measure(targets, args, work)
    finally:
        for target in targets:
            target.process.terminate()
            target.process.wait(timeout=30)
        if pg:
            asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
