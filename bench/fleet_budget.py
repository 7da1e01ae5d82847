"""The call budget at fleet scale: what a seeded fleet of ready instances costs, and what
is left for new work, with default settings (RATE_LIMIT_PER_MINUTE 100).

    .venv/bin/python bench/fleet_budget.py [--instances 0,1000,5000,20000] [--window 300]
        [--creates 3] [--actions 3] [--changes 6]

For each fleet size N (0 is the reference: an empty fleet, measured in the same run), the
simulator runs in this process, N `running` instances put straight into its books and, as
`ready` rows with their port mappings, into a fresh SQLite database, their next polls
spread over the stable interval (as after a long run). The service runs as its own
process (`novita-lifecycle serve`, default settings) against it. Once its first relist
has finished (read from /health), over `--window` seconds:

- steady Novita calls a minute: what the simulator answered, by path;
- create → ready: `--creates` instances created one at a time through the API, from the
  POST to the `instance.ready` notification (the simulator's app answers 2 s after
  `running`, its default);
- action answer time: `--actions` stops of seeded instances, POST to answer;
- relist: sweeps finished and the last one's duration (/health);
- notice time: `--changes` seeded instances stopped behind the service's back at random
  moments of the first half of the window (the empty fleet's window is a minute), each
  watched through the API (our status read every second) until the service has seen it
  (at most 2 x RELIST_INTERVAL).

Prints one line per N, then create → ready as a difference to the empty fleet's. All on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ready_lag import (
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
from bench.seed_instances import insert_rows, instance_row, running_instance
from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.domain import new_instance_id
from service.provisioning.naming import provider_name
from service.settings import Settings
from service.simulator import SimInstance, Simulator, SimulatorConfig


def seed_simulator(sim: Simulator, count: int) -> list[tuple[str, SimInstance]]:
    """N running instances named with our ids; returns (our id, instance) pairs."""
    unix = sim.clock.now().timestamp()
    seeded = []
    for n in range(count):
        our_id = new_instance_id()
        name = provider_name(our_id, f"fleet-{n}")
        seeded.append((our_id, running_instance(sim, n, name, created_at=unix)))
    return seeded


async def seed_rows(url: str, seeded: list[tuple[str, SimInstance]]) -> list[tuple[str, str]]:
    """Our `ready` rows for them, next polls spread over the stable interval; returns
    (our id, Novita id) pairs."""
    defaults = Settings()
    stable = max(
        defaults.reconcile_interval,
        len(seeded) * 60 / (defaults.rate_limit_per_minute * defaults.stable_poll_share),
    )
    now = datetime.now(UTC)
    spread = random.Random(1)
    rows = [
        instance_row(our_id, f"fleet-{n}", inst, status="ready", now=now,
                     next_check_at=now + timedelta(seconds=spread.uniform(0, stable)))
        for n, (our_id, inst) in enumerate(seeded)
    ]
    database = Database.from_url(url)
    try:
        await upgrade_to_head(database.engine)
        await insert_rows(database, rows)
    finally:
        await database.close()
    return [(our_id, inst.id) for our_id, inst in seeded]


def api_calls(sim: Simulator) -> dict[str, int]:
    return {p: n for p, n in sim.requests_by_path.items() if not p.startswith("/_sim")}


async def measure(count: int, args: argparse.Namespace) -> dict[str, Any]:
    relist_interval = Settings().relist_interval
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        url = f"sqlite+aiosqlite:///{work}/fleet.db"
        sim = Simulator(SimulatorConfig(api_keys=(NOVITA_KEY,), seed=1, capacity_on_demand=1000))
        await sim.start()
        seeded = await seed_rows(url, seed_simulator(sim, count))
        api_port = free_port()
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
            }
            service = spawn(
                [PYTHON, "-m", "service", "serve", "--port", str(api_port)], work, "serve.log", env
            )
            try:
                await wait_listening(api_port, within=120)
                api = f"http://127.0.0.1:{api_port}"
                async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {API_KEY}"}
                ) as http:
                    return await observe(count, args, sim, http, api, hooks, seeded,
                                         relist_interval)
            finally:
                stop(service)
                await sim.stop()


async def relister_facts(http: aiohttp.ClientSession, api: str) -> dict[str, Any]:
    async with http.get(f"{api}/health") as response:
        body = await response.json()
    workers = (body.get("checks") or {}).get("workers") or {}
    return dict(workers.get("relister") or {})


async def status_of(http: aiohttp.ClientSession, api: str, instance_id: str) -> dict[str, Any]:
    async with http.get(f"{api}/api/instances/{instance_id}") as response:
        return dict(await response.json())


async def observe(
    count: int,
    args: argparse.Namespace,
    sim: Simulator,
    http: aiohttp.ClientSession,
    api: str,
    hooks: Any,
    seeded: list[tuple[str, str]],
    relist_interval: float,
) -> dict[str, Any]:
    first_sweep_started = time.monotonic()
    async with asyncio.timeout(1200):
        # Polling /health: the service is another process, with nothing to wait on.
        while not (await relister_facts(http, api)).get("sweeps"):  # noqa: ASYNC110
            await asyncio.sleep(1)
    first_sweep = time.monotonic() - first_sweep_started
    before = api_calls(sim)
    started = time.monotonic()
    chooser = random.Random(count)
    changed = chooser.sample(seeded, min(args.changes, len(seeded)))
    others = [s for s in seeded if s not in changed]
    stopped = chooser.sample(others, min(args.actions, len(others)))

    async def create_once(n: int) -> float:
        body = {"name": f"new-{n}", "productName": "RTX 4090 24GB", "templateId": "212"}
        asked = time.monotonic()
        async with http.post(f"{api}/api/instances", json=body) as response:
            instance_id = (await response.json())["id"]
        async with asyncio.timeout(300):
            while instance_id not in hooks.ready_at:
                hooks.arrived.clear()
                await hooks.arrived.wait()
        return time.monotonic() - asked

    async def creates() -> list[float]:
        times = []
        for n in range(args.creates):
            await asyncio.sleep(5)
            times.append(await create_once(n))
        return times

    async def actions() -> list[float]:
        times = []
        for our_id, _ in stopped:
            await asyncio.sleep(7)
            asked = time.monotonic()
            async with http.post(f"{api}/api/instances/{our_id}/stop") as response:
                await response.read()
            times.append(time.monotonic() - asked)
        return times

    async def notice(our_id: str, novita_id: str, at: float) -> float | None:
        await asyncio.sleep(at)
        sim.set_status(novita_id, "exited", hold=True)
        made = time.monotonic()
        while time.monotonic() - made < 2 * relist_interval:
            if (await status_of(http, api, our_id))["status"] != "ready":
                return time.monotonic() - made
            await asyncio.sleep(1)
        return None

    seconds = args.window if count else min(args.window, 60.0)  # empty: nothing to notice
    window = asyncio.create_task(asyncio.sleep(seconds))
    results = await asyncio.gather(
        creates(),
        actions(),
        *(
            notice(our_id, novita_id, chooser.uniform(0, seconds / 2))
            for our_id, novita_id in changed
        ),
    )
    await window
    elapsed = time.monotonic() - started
    after = api_calls(sim)
    facts = await relister_facts(http, api)
    by_path = {p: n - before.get(p, 0) for p, n in after.items() if n - before.get(p, 0)}
    return {
        "instances": count,
        "first_sweep": first_sweep,
        "calls_per_minute": sum(by_path.values()) * 60 / elapsed,
        "by_path": by_path,
        "create_ready": results[0],
        "actions": results[1],
        "notices": [n for n in results[2:] if n is not None],
        "unnoticed": sum(1 for n in results[2:] if n is None),
        "sweeps": facts.get("sweeps"),
        "last_sweep_seconds": facts.get("lastSweepSeconds"),
        "elapsed": elapsed,
    }


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


async def run(args: argparse.Namespace) -> None:
    reference: float | None = None
    for count in [int(c) for c in args.instances.split(",")]:
        r = await measure(count, args)
        create = statistics.median(r["create_ready"])
        if count == 0:
            reference = create
        print(
            f"N={count:,}: {r['calls_per_minute']:.0f} Novita calls/min over "
            f"{r['elapsed']:.0f} s {r['by_path']}; create→ready median {create:.2f} s "
            f"{[round(t, 2) for t in r['create_ready']]}"
            + (f" (empty fleet +{create - reference:.2f} s)" if reference is not None else "")
            + f"; stop answered median {med(r['actions'])} s; first relist "
            f"{r['first_sweep']:.0f} s, sweeps {r['sweeps']}, last sweep "
            f"{r['last_sweep_seconds']} s; notice median {med(r['notices'])} s max "
            f"{max(r['notices'], default=0):.0f} s ({len(r['notices'])} seen, "
            f"{r['unnoticed']} unseen)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="0,1000,5000,20000")
    parser.add_argument("--window", type=float, default=300.0)
    parser.add_argument("--creates", type=int, default=3)
    parser.add_argument("--actions", type=int, default=3)
    parser.add_argument("--changes", type=int, default=6)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
