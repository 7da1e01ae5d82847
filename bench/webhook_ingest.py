"""Inbound webhook ingest throughput: signed, unique webhooks per second into the inbox.

    .venv/bin/python bench/webhook_ingest.py --compare [--runs 5] [--duration 10]

Starts, side by side and each pinned to CPU 0: a bare Starlette endpoint that reads the
body and answers 200 (for scale), and `novita-lifecycle serve --simulator` (one uvicorn
worker, every worker beside it, or none with `--no-workers`; both with `--compare`) on
SQLite and, when TEST_POSTGRES_URL is set or scripts/test-postgres.sh finds a local
server, on PostgreSQL. Each database is seeded first with `--known` instances (`ready`,
and `running` in the simulator's saved world, so no worker disturbs them); `--known-share`
of the webhooks report on those (the applier locks and updates their rows), the rest on
instances the service does not know. Then runs rounds: in each, wrk (pinned to CPU 1)
replays fresh pre-signed, unique Standard Webhooks requests against every target in turn,
so the figures of one round share the machine's state of the moment. Prints each round
(with each process's own CPU time per request, workers included, on PostgreSQL its
backends' too, and the inbox backlog, events stored but not yet applied, after it), the medians, and
each target's median share of the bare endpoint's rate. Last, each target with workers
gets a run paced at half its median rate, and the applier's lag (webhook stored and
acknowledged → applied, `received_at` → `processed_at`) is read back from the inbox:
p50/p99, and the backlog left when the run ends. Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import asyncio
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench.seed_instances import insert_rows, instance_row, running_instance  # noqa: E402
from service.db.engine import Database  # noqa: E402
from service.db.migrations import upgrade_to_head  # noqa: E402
from service.db.models import inbound_webhooks  # noqa: E402
from service.db.simulator_world import save_world  # noqa: E402
from service.domain import new_instance_id  # noqa: E402
from service.provisioning.naming import provider_name  # noqa: E402
from service.signatures import sign  # noqa: E402
from service.simulator import (  # noqa: E402
    Simulator,
    SimulatorConfig,
    persistence,
)

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


def known_novita_id(n: int) -> str:
    return f"{n:016x}"


async def seed_known(url: str, count: int) -> None:
    """Migrate the database, then `count` instances: `ready` rows of ours (not polled for a
    day) and, in the simulator's saved world that `serve --simulator` restores, the same
    instances `running`, so neither the relist nor the polls change them."""
    database = Database.from_url(url)
    try:
        await upgrade_to_head(database.engine)
        if not count:
            return
        sim = Simulator(SimulatorConfig(api_keys=("bench",), seed=1))
        now = datetime.now(UTC)
        rows = []
        for n in range(count):
            our_id = new_instance_id()
            name = provider_name(our_id, f"bench-{n}")
            inst = running_instance(sim, n, name, created_at=now.timestamp(), app=False)
            rows.append(
                instance_row(
                    our_id, name, inst, status="ready", now=now,
                    next_check_at=now + timedelta(days=1),
                    observed_at=now - timedelta(minutes=1),
                )
            )
        sim.state.resume(count, seed=1)
        await insert_rows(database, rows)
        await save_world(database, persistence.snapshot(sim), now)
    finally:
        await database.close()


def lua_script(
    path: Path, count: int, *, known: int, known_share: float, delay_ms: float = 0
) -> None:
    """`count` distinct signed requests for wrk, replayed in order; `known_share` of them
    about the seeded instances (in turn), the rest about instances nobody knows. With
    `delay_ms`, each connection waits that long after each answer (a paced run).

    The requests go in a data file read at start-up: one Lua chunk holding them all
    would exceed LuaJIT's limit on constants per function.
    """
    now = int(time.time())
    data = path.with_suffix(".tsv")
    seen_known = 0
    with data.open("w") as out:
        for n in range(count):
            about_known = known and int((n + 1) * known_share) > int(n * known_share)
            if about_known:
                instance_id = known_novita_id(seen_known % known)
                seen_known += 1
            else:
                instance_id = f"u{n:015x}"
            msg_id = f"msg_{uuid.uuid4().hex}"
            body = json.dumps(
                {
                    "type": "instance.status_changed",
                    "timestamp": now,
                    "data": {"instanceId": instance_id, "status": "running"},
                },
                separators=(",", ":"),
            ).encode()
            out.write(f"{msg_id}\t{now}\t{sign(KEY, msg_id, now, body)}\t{body.decode()}\n")
    pace = f"\ndelay = function() return {delay_ms:.3f} end\n" if delay_ms else ""
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
{pace}"""
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
    database_url: str | None = None
    workers: bool = False
    rates: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    # The process's CPU microseconds per request answered, each run.
    cpu_us: list[float] = field(default_factory=list)
    # PostgreSQL: its backends' CPU microseconds per request, each run.
    server_us: list[float] = field(default_factory=list)


def start(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    work: Path,
    *,
    database_url: str | None = None,
    workers: bool = False,
) -> Target:
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"{name}.log", "w"),
    )
    return Target(name, port, process, database_url, workers)


async def _inbox_query(url: str, query: sa.Executable) -> list[Any]:
    database = Database.from_url(url)
    try:
        async with database.read() as conn:
            return list(await conn.execute(query))
    finally:
        await database.close()


def backlog(target: Target) -> int:
    """Events stored and acknowledged but not yet applied."""
    assert target.database_url is not None
    query = sa.select(sa.func.count()).where(inbound_webhooks.c.processed_at.is_(None))
    return int(asyncio.run(_inbox_query(target.database_url, query))[0][0])


def lags(target: Target, since: datetime) -> list[float]:
    """Milliseconds from storing to applying, for each event stored since `since`."""
    assert target.database_url is not None
    c = inbound_webhooks.c
    query = sa.select(c.received_at, c.processed_at).where(
        c.received_at >= since, c.processed_at.is_not(None)
    )
    rows = asyncio.run(_inbox_query(target.database_url, query))
    return [(done - stored).total_seconds() * 1000 for stored, done in rows]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(target: Target) -> dict[int, float]:
    """PostgreSQL: CPU seconds used so far by each server process connected to the
    target's database (its backends; not the server's shared background processes)."""
    if target.database_url is None or not target.database_url.startswith("postgresql"):
        return {}
    query = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    used = {}
    for (pid,) in asyncio.run(_inbox_query(target.database_url, query)):
        try:
            used[pid] = cpu_seconds(pid)
        except OSError:  # ended meanwhile
            pass
    return used


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(targets: list[Target], args: argparse.Namespace, work: Path) -> None:
    """Rounds of one run per target, back to back, so each round's figures share the
    machine's state of the moment (its speed drifts by a third over an hour)."""
    for target in targets:
        wait_listening(target.port)
    script = work / "requests.lua"
    for round_number in range(1, args.runs + 1):
        # fresh timestamps, new ids
        lua_script(script, int(args.requests), known=args.known, known_share=args.known_share)
        line = []
        for target in targets:
            used = cpu_seconds(target.process.pid)
            server_before = server_cpu(target)
            rate, p99 = run_wrk(target.port, script, args.duration, args.connections)
            requests = rate * args.duration
            cpu_us = (cpu_seconds(target.process.pid) - used) * 1e6 / requests
            server = server_cpu(target)
            server_us = sum(t - server_before.get(pid, 0.0) for pid, t in server.items())
            server_us *= 1e6 / requests
            target.rates.append(rate)
            target.p99s.append(p99)
            target.cpu_us.append(cpu_us)
            if server:
                target.server_us.append(server_us)
            figures = f"{rate:,.0f}/s p99 {p99:.1f} ms, CPU {cpu_us:.0f} µs"
            if server:
                figures += f" + server {server_us:.0f} µs"
            if target.workers:
                figures += f", backlog {backlog(target):,}"
            line.append(f"{target.name} {figures}")
        print(f"round {round_number}: " + " | ".join(line), flush=True)
    for target in targets:
        print(
            f"{target.name}: median {statistics.median(target.rates):,.0f} req/s, "
            f"median p99 {statistics.median(target.p99s):.1f} ms, "
            f"median CPU {statistics.median(target.cpu_us):.0f} µs a request"
            + (
                f" (+ PostgreSQL {statistics.median(target.server_us):.0f} µs)"
                if target.server_us
                else ""
            )
        )
    bare = next((target for target in targets if target.name == BARE), None)
    if bare is not None:
        for target in targets:
            if target is not bare:
                ratios = [
                    mine / theirs for mine, theirs in zip(target.rates, bare.rates, strict=True)
                ]
                shares = " ".join(f"{ratio:.0%}" for ratio in ratios)
                print(
                    f"{target.name} / {BARE}: median {statistics.median(ratios):.0%} per round "
                    f"({shares})"
                )
    for target in targets:
        if target.workers and args.lag_duration:
            applier_lag(target, args, work)


def applier_lag(target: Target, args: argparse.Namespace, work: Path) -> None:
    """A run paced at half the target's median rate, then the lag of every event it sent.

    wrk waits `delay` after each answer on each connection, so a connection's cycle is
    the delay plus the latency: a short first run measures that latency, and the delay
    of the measured run leaves it out."""
    goal = statistics.median(target.rates) / 2
    connections = args.connections
    script = work / "paced.lua"
    cycle_ms = 1000 * connections / goal  # what each connection's cycle should be
    delay_ms = cycle_ms
    for duration in (3, args.lag_duration):
        lua_script(
            script,
            int(args.requests),
            known=args.known,
            known_share=args.known_share,
            delay_ms=delay_ms,
        )
        while backlog(target):  # what earlier runs left is not this run's lag
            time.sleep(0.5)
        since = datetime.now(UTC)
        rate, p99 = run_wrk(target.port, script, duration, connections)
        latency_ms = max(0.0, 1000 * connections / rate - delay_ms)
        delay_ms = max(0.1, cycle_ms - latency_ms)
    left = backlog(target)
    waited = time.monotonic()
    while backlog(target) and time.monotonic() - waited < 120:
        time.sleep(0.2)
    drained = time.monotonic() - waited
    measured = lags(target, since)
    print(
        f"{target.name} paced at half its median rate ({rate:,.0f}/s of {goal:,.0f}/s, "
        f"p99 {p99:.1f} ms): applier lag p50 {percentile(measured, 0.5):.0f} ms, "
        f"p99 {percentile(measured, 0.99):.0f} ms over {len(measured):,} events; "
        f"backlog at the end {left:,} (applied {drained:.1f} s later)"
    )


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
    workers = parser.add_mutually_exclusive_group()
    workers.add_argument(
        "--no-workers",
        action="store_true",
        help="serve --no-workers: measure ingest without the applier beside it",
    )
    workers.add_argument(
        "--compare",
        action="store_true",
        help="serve each database twice, with every worker and with --no-workers",
    )
    parser.add_argument("--skip-bare", action="store_true", help="skip the bare endpoint")
    databases_only = parser.add_mutually_exclusive_group()
    databases_only.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    databases_only.add_argument("--postgres-only", action="store_true", help="skip SQLite")
    parser.add_argument("--runs", type=int, default=5, help="rounds (one run per target each)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--requests",
        type=int,
        default=150_000,
        help="distinct signed requests per run (more than a run sends)",
    )
    parser.add_argument("--known", type=int, default=1000, help="instances seeded in each database")
    parser.add_argument(
        "--known-share",
        type=float,
        default=0.5,
        help="share of the webhooks about the seeded instances (the rest: unknown ones)",
    )
    parser.add_argument(
        "--lag-duration",
        type=int,
        default=10,
        help="seconds of the run at half rate that measures the applier's lag (0: none)",
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

    variants = [True, False] if args.compare else [not args.no_workers]
    databases: list[str] = []
    engines = []
    for with_workers in variants if not args.postgres_only else []:
        suffix = "" if with_workers else "-nw"
        engines.append(("sqlite", with_workers, f"sqlite+aiosqlite:///{work}/ingest{suffix}.db"))
    pg = postgres_url() if not args.sqlite_only else None
    if args.postgres_only and not pg:
        sys.exit("--postgres-only: no PostgreSQL (set TEST_POSTGRES_URL)")
    if pg:
        import asyncpg

        admin = pg.replace("+asyncpg", "")

        async def admin_sql(sql: str) -> None:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        for with_workers in variants:
            db = f"ingest_bench_{os.getpid()}{'' if with_workers else '_nw'}"
            asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{db}"'))
            asyncio.run(admin_sql(f'CREATE DATABASE "{db}"'))
            databases.append(db)
            engines.append(("postgresql", with_workers, pg.rsplit("/", 1)[0] + f"/{db}"))
    try:
        for engine, with_workers, url in engines:
            asyncio.run(seed_known(url, args.known))
            port = free_port()
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "INBOUND_WEBHOOK_SECRETS": SECRET,
                "API_KEYS": "bench",
                "LOG_LEVEL": "WARNING",
            }
            name = f"ingest on {engine}" + ("" if with_workers else " (no workers)")
            targets.append(
                start(
                    name,
                    [
                        PYTHON,
                        "-m",
                        "service",
                        "serve",
                        "--simulator",
                        *([] if with_workers else ["--no-workers"]),
                        "--port",
                        str(port),
                    ],
                    env,
                    port,
                    work,
                    database_url=url,
                    workers=with_workers,
                )
            )
        measure(targets, args, work)
    finally:
        for target in targets:  # all at once: each may take its workers' grace to stop
            target.process.terminate()
        for target in targets:
            try:
                target.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                target.process.kill()
                target.process.wait()
        for db in databases:
            asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
