"""Two processes, one Novita rate limit: what two `serve` processes on one PostgreSQL
database start at Novita together, with the limit shared and, for scale, without.

    .venv/bin/python bench/shared_limit.py [--limit 30] [--creates 20] [--window 150]

For each of RATE_LIMIT_SHARED=true and false: a fresh PostgreSQL database
(TEST_POSTGRES_URL, or the local server scripts/test-postgres.sh finds), the Novita
simulator in this process, and two `novita-lifecycle serve` processes on that database,
each with RATE_LIMIT_PER_MINUTE=--limit. `--creates` instances are asked of each process at
once, so both want more calls than the limit allows for a while (creates, then the reads of
instances in transition, then readiness). The simulator's request count is sampled every
0.2 s for `--window` seconds; printed: the most Novita requests started in any 60 s
(against the limit), the calls by path, and how many instances reached `ready`. All on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ready_lag import (  # noqa: E402
    API_KEY,
    NOVITA_KEY,
    PYTHON,
    SECRET,
    free_port,
    receiver,
    spawn,
    stop,
    wait_listening,
)
from bench.webhook_ingest import postgres_url  # noqa: E402
from service.simulator import Simulator, SimulatorConfig  # noqa: E402

BODY = {"name": "shared-limit", "productName": "RTX 4090 24GB", "templateId": "212"}


async def admin_sql(admin: str, sql: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def busiest_minute(samples: list[tuple[float, int]]) -> int:
    """The most requests between two samples at most 60 s apart."""
    best, j = 0, 0
    for at, count in samples:
        while samples[j][0] < at - 60:
            j += 1
        best = max(best, count - samples[j][1])
    return best


async def one_run(pg: str, shared: bool, args: argparse.Namespace) -> dict[str, Any]:
    admin = pg.replace("+asyncpg", "")
    name = f"shared_limit_{os.getpid()}_{int(shared)}"
    await admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin_sql(admin, f'CREATE DATABASE "{name}"')
    url = pg.rsplit("/", 1)[0] + f"/{name}"
    sim = Simulator(SimulatorConfig(api_keys=(NOVITA_KEY,), seed=1, capacity_on_demand=1000))
    await sim.start()
    services = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            async with receiver() as hooks:
                env = {
                    "PATH": "/usr/bin:/bin",
                    "DATABASE_URL": url,
                    "NOVITA_API_KEY": NOVITA_KEY,
                    "NOVITA_API_BASE_URL": sim.base_url,
                    "API_KEYS": API_KEY,
                    "WEBHOOK_URL": hooks.url,
                    "WEBHOOK_SECRET": SECRET,
                    "ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
                    "ALLOW_PRIVATE_PROBE_TARGETS": "true",
                    "LOG_LEVEL": "WARNING",
                    "RATE_LIMIT_PER_MINUTE": str(args.limit),
                    "RATE_LIMIT_SHARED": "true" if shared else "false",
                }
                ports = [free_port(), free_port()]
                for n, port in enumerate(ports):
                    command = [PYTHON, "-m", "service", "serve", "--port", str(port)]
                    if n == 0:
                        command.append("--migrate")
                    services.append(spawn(command, work, f"serve{n}.log", env))
                    await wait_listening(port, within=120)
                samples: list[tuple[float, int]] = [(time.monotonic(), sim.request_count)]
                async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {API_KEY}"}
                ) as http:

                    async def create(port: int, n: int) -> None:
                        body = {**BODY, "name": f"shared-{port}-{n}"}
                        url = f"http://127.0.0.1:{port}/api/instances"
                        async with http.post(url, json=body) as answer:
                            answer.raise_for_status()

                    await asyncio.gather(
                        *(create(port, n) for port in ports for n in range(args.creates))
                    )
                    started = time.monotonic()
                    while time.monotonic() - started < args.window:
                        await asyncio.sleep(0.2)
                        samples.append((time.monotonic(), sim.request_count))
                return {
                    "busiest": busiest_minute(samples),
                    "by_path": dict(sim.requests_by_path),
                    "ready": len(hooks.ready_at),
                    "total": sim.request_count,
                }
    finally:
        for service in services:
            stop(service)
        await sim.stop()
        await admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(args: argparse.Namespace) -> None:
    pg = postgres_url()
    if not pg:
        sys.exit("no PostgreSQL (set TEST_POSTGRES_URL)")
    for shared in (True, False):
        r = await one_run(pg, shared, args)
        print(
            f"RATE_LIMIT_SHARED={str(shared).lower()}: two processes, limit {args.limit}/min "
            f"each; most Novita requests in any 60 s: {r['busiest']} "
            f"({r['busiest'] / args.limit:.2f} x the limit); {r['ready']} of "
            f"{2 * args.creates} ready within {args.window} s; {r['total']} requests "
            f"{r['by_path']}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--window", type=float, default=150.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
