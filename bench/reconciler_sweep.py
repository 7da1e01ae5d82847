"""Reconciler cost: one full relist of N provider instances, and Novita calls per minute.

    .venv/bin/python bench/reconciler_sweep.py [--instances 10000] [--page-size 100]

Puts N live (`running`) instances straight into the simulator's books (no create calls),
half of them named with our ids and recorded in a fresh SQLite database as `running`
with the same port mappings, the other half foreign. Then, against the simulator on
loopback:

1. a full relist with nothing to repair: list calls (must be ⌈N / page size⌉) and time;
2. the same after 5% of our instances stopped behind our back: the repairs it writes;
3. per-instance polls of 500 due rows: the cost of one poll (claim, GET, apply);
4. steady-state Novita calls per minute with the default settings: polls of the stable
   instances at the pace the poll gave them (RECONCILE_INTERVAL, stretched to keep within
   STABLE_POLL_SHARE of the rate limit) plus one relist per RELIST_INTERVAL, against the
   default rate limit (RATE_LIMIT_PER_MINUTE).

The client's rate limit is lifted so the figures are the service's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seed_instances import insert_rows, instance_row, running_instance
from service.clock import ManualClock
from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.db.models import instances
from service.domain import new_instance_id
from service.novita import NovitaClient
from service.provisioning.naming import provider_name
from service.settings import Settings
from service.simulator import SimInstance, Simulator, SimulatorConfig
from service.workers.reconciler import Reconciler, ReconcilerConfig
from service.workers.relister import RelistConfig, Relister

KEY = "bench-key"
LIST_PATH = "/gpu/instances"
GET_PATH = "/gpu/instance"
BATCH = 2000


def seed_simulator(sim: Simulator, count: int) -> list[tuple[str, SimInstance]]:
    """N running instances in the simulator's books; returns (our id or "", instance)."""
    seeded = []
    unix = sim.clock.now().timestamp()
    for n in range(count):
        ours = n % 2 == 0
        our_id = new_instance_id() if ours else ""
        name = provider_name(our_id, f"bench-{n}") if ours else f"someone-else-{n}"
        seeded.append((our_id, running_instance(sim, n, name, created_at=unix)))
    return seeded


async def seed_rows(
    database: Database, seeded: list[tuple[str, SimInstance]], clock: ManualClock
) -> None:
    now = clock.now()
    rows = [
        # next check in a day: polls are measured separately
        instance_row(our_id, inst.name, inst, status="running", now=now,
                     next_check_at=now + timedelta(days=1))
        for our_id, inst in seeded
        if our_id
    ]
    await insert_rows(database, rows, BATCH)


async def timed_sweep(relister: Relister, sim: Simulator) -> tuple[int, float, int]:
    sim.requests_by_path.clear()
    started = time.perf_counter()
    tally = await relister.sweep()
    return sim.requests_by_path[LIST_PATH], time.perf_counter() - started, tally.repaired


async def run(count: int, page_size: int) -> None:
    defaults = Settings()
    clock = ManualClock()
    sim = Simulator(SimulatorConfig(api_keys=(KEY,), seed=1, auto_tick=False), clock=clock)
    await sim.start()
    with tempfile.TemporaryDirectory() as scratch:
        database = Database.from_url(f"sqlite+aiosqlite:///{scratch}/bench.db")
        novita = NovitaClient(sim.base_url, KEY, clock=clock, rate_limit_per_minute=1_000_000)
        try:
            await upgrade_to_head(database.engine)
            seeded = seed_simulator(sim, count)
            await seed_rows(database, seeded, clock)
            ours = [inst for our_id, inst in seeded if our_id]
            relister = Relister(
                database=database,
                novita=novita,
                clock=clock,
                owner="bench",
                config=RelistConfig(page_size=page_size),
            )
            assert await relister._lead()

            calls, seconds, repaired = await timed_sweep(relister, sim)
            expected = math.ceil(count / page_size)
            print(f"instances: {count} ({len(ours)} ours, {count - len(ours)} foreign)")
            print(f"steady relist: {calls} list calls (expected {expected}), {seconds:.2f} s,")
            print(f"  {repaired} repairs, {relister.foreign_instances} foreign reported")
            assert calls == expected

            stopped = ours[::20]
            for inst in stopped:
                sim.set_status(inst.id, "exited", hold=True)
            calls2, seconds2, repaired2 = await timed_sweep(relister, sim)
            print(
                f"relist with {len(stopped)} stopped behind our back: {calls2} list calls, "
                f"{seconds2:.2f} s, {repaired2} repairs"
            )

            # Polls: make 500 rows due and let the per-instance poll handle them.
            stopped_ids = {inst.id for inst in stopped}
            due = [inst.id for inst in ours if inst.id not in stopped_ids][:500]
            async with database.transaction() as conn:
                await conn.execute(
                    instances.update()
                    .where(instances.c.novita_instance_id.in_(due))
                    .values(next_check_at=clock.now())
                )
            reconciler = Reconciler(
                database=database,
                novita=novita,
                clock=clock,
                owner="bench",
                config=replace(ReconcilerConfig.from_settings(defaults), batch_size=50),
            )
            sim.requests_by_path.clear()
            started = time.perf_counter()
            polled = 0
            while done := await reconciler.run_once():
                polled += done
            poll_seconds = (time.perf_counter() - started) / max(polled, 1)
            print(
                f"polls: {polled} in {poll_seconds * polled:.2f} s = {poll_seconds * 1000:.1f} ms "
                f"per poll ({sim.requests_by_path[GET_PATH]} GET calls)"
            )

            # The stable pace the poll gave those rows (their next check, from now).
            async with database.read() as conn:
                next_checks = (
                    await conn.execute(
                        sa.select(instances.c.next_check_at).where(
                            instances.c.novita_instance_id.in_(due)
                        )
                    )
                ).scalars()
                intervals = [(at - clock.now()).total_seconds() for at in next_checks]
            stable_interval = statistics.median(intervals)
            polled_slowly = len(ours)  # running and stopped alike
            polls_per_minute = polled_slowly * 60 / stable_interval
            relists_per_minute = expected * 60 / defaults.relist_interval
            print(
                "steady state with defaults "
                f"(RECONCILE_INTERVAL={defaults.reconcile_interval:g} s, "
                f"RELIST_INTERVAL={defaults.relist_interval:g} s, "
                f"STABLE_POLL_SHARE={defaults.stable_poll_share:g}):"
            )
            print(
                f"  each of {polled_slowly:,} stable instances polled every "
                f"{stable_interval:,.0f} s"
            )
            print(
                f"  polls {polls_per_minute:,.0f}/min + relist {relists_per_minute:,.1f}/min "
                f"= {polls_per_minute + relists_per_minute:,.0f} Novita calls/min; "
                f"rate limit {defaults.rate_limit_per_minute}/min"
            )
            print(
                f"  service time per minute: polls {polls_per_minute * poll_seconds:,.1f} s, "
                f"relist {60 / defaults.relist_interval * seconds:,.2f} s"
            )
        finally:
            await novita.close()
            await database.close()
            await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(args.instances, args.page_size))


if __name__ == "__main__":
    main()
