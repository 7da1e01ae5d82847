"""Notifier throughput: N outbox rows delivered by one notifier to a local receiver.

    .venv/bin/python bench/notifier_throughput.py [--rows 5000] [--runs 3]
        [--concurrency 16] [--per-host 16] [--receiver-delay 0]

Each run starts from a fresh, migrated database holding N pending notifications (one per
instance, all to one receiver on 127.0.0.1 that answers 200 at once, or after
`--receiver-delay` seconds: a slow receiver), then times one notifier calling `run_once`
until nothing is due, and checks every row was delivered. Reports deliveries per second
(median of the runs) and the most requests the receiver had in hand at once, on SQLite,
and on PostgreSQL too when TEST_POSTGRES_URL is set (a scratch database is created and
dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
import structlog
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.clock import SystemClock
from service.db import repository as repo
from service.db.engine import Database
from service.db.migrations import upgrade_to_head
from service.db.models import outbox
from service.domain import InstanceSpec
from service.settings import Settings
from service.workers.notifier import Notifier

PER_HOST_DEFAULT = int(Settings.model_fields["notifier_per_host_concurrency"].default)
SECRET = "whsec_" + base64.b64encode(b"benchmark-signing-key-0123456789").decode()


@asynccontextmanager
async def receiver(delay: float) -> AsyncIterator[tuple[str, list[int]]]:
    count = [0, 0, 0]  # delivered, in hand now, most in hand at once

    async def handle(request: web.Request) -> web.Response:
        count[1] += 1
        count[2] = max(count[2], count[1])
        try:
            await request.read()
            if delay:
                await asyncio.sleep(delay)
            count[0] += 1
            return web.Response(text="ok")
        finally:
            count[1] -= 1

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", count
    finally:
        await runner.cleanup()


async def fill(database: Database, rows: int) -> None:
    clock = SystemClock()
    async with database.transaction() as conn:
        for index in range(rows):
            spec = InstanceSpec(name=f"bench-{index}", product_name="RTX 4090 24GB")
            await repo.insert_instance(conn, spec, now=clock.now())


async def one_run(url: str, rows: int, args: argparse.Namespace, target: str) -> float:
    database = Database.from_url(url)
    try:
        await upgrade_to_head(database.engine)
        await fill(database, rows)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            webhook_secret=SECRET,
            webhook_url=target,
            allow_private_webhook_targets=True,
            notifier_concurrency=args.concurrency,
            notifier_per_host_concurrency=args.per_host,
        )
        async with Notifier(
            database=database, settings=settings, clock=SystemClock(), owner="bench"
        ) as notifier:
            started = time.perf_counter()
            while await notifier.run_once():
                pass
            elapsed = time.perf_counter() - started
        async with database.read() as conn:
            delivered = await conn.scalar(
                sa.select(sa.func.count()).where(outbox.c.status == "delivered")
            )
        if delivered != rows:
            raise SystemExit(f"only {delivered} of {rows} notifications were delivered")
        return rows / elapsed
    finally:
        await database.close()


async def bench_engine(
    name: str, make_url: Callable[[], Awaitable[str]], drop: Callable[[str], Awaitable[None]]
) -> None:
    args = ARGS
    rates = []
    async with receiver(args.receiver_delay) as (target, count):
        for _ in range(args.runs):
            url = await make_url()
            try:
                rates.append(await one_run(url, args.rows, args, target))
            finally:
                await drop(url)
    shown = ", ".join(f"{rate:,.0f}" for rate in rates)
    # (A receiver that answers at once finishes each request before the next one starts.)
    in_hand = f"; at most {count[2]} requests in hand at once" if args.receiver_delay else ""
    print(
        f"{name:<10} rows={args.rows} concurrency={args.concurrency} per_host={args.per_host} "
        f"receiver_delay={args.receiver_delay}: median {statistics.median(rates):,.0f} "
        f"deliveries/s (runs: {shown}){in_hand}"
    )


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as scratch:
        counter = [0]

        async def sqlite_url() -> str:
            counter[0] += 1
            return f"sqlite+aiosqlite:///{scratch}/bench{counter[0]}.db"

        async def no_drop(_url: str) -> None:
            return None

        await bench_engine("sqlite", sqlite_url, no_drop)

    if os.environ.get("TEST_POSTGRES_URL"):
        from tests.plugins.database import create_postgres_database, drop_postgres_database

        await bench_engine("postgresql", create_postgres_database, drop_postgres_database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--per-host", type=int, default=PER_HOST_DEFAULT)
    parser.add_argument("--receiver-delay", type=float, default=0.0)
    ARGS = parser.parse_args()
    asyncio.run(main())
