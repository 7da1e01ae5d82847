"""Time to ready without webhooks: from the provider's `running` to our `ready`.

    .venv/bin/python bench/ready_lag.py [--counts 1,5,50] [--rounds 3]
        [--env NAME=VALUE ...]

Each round starts the Novita simulator as its own process (`novita-lifecycle simulate`,
the app answering as soon as an instance runs: `--app-startup-delay 0`; capacity raised)
and the service (`novita-lifecycle serve`, default settings: the rate limit of 100 calls a
minute, no inbound webhooks, so everything it learns it learns by reading Novita) on a
fresh SQLite database, with notifications going to a receiver in this process. It creates
N instances at once through the API and waits for every `instance.ready` notification.
Per instance:

- ready lag: our `readyAt` minus the moment the simulator made it `running` (`runningSince`);
- notified lag: when the `instance.ready` notification arrived, minus the same moment;
- and the ready lag's two parts: seen (our `runningAt`, when we recorded `running`, minus
  that moment) and probed (`readyAt` minus `runningAt`).

Novita calls per minute: the simulator's request count in the minute from the first
create (the creates, the reads until ready, then the steady reads), against the limit;
and the calls made from the first create to the last notification. Prints, per N, the
median and max of each lag over every instance of every round, and the calls in the
first minute (median of the rounds). A round takes at least a minute. All on
127.0.0.1; `--env` passes a setting to the service (e.g. TRANSITIONAL_POLL_FLOOR=5).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
API_KEY = "bench"
NOVITA_KEY = "bench-novita"
SECRET = "whsec_" + base64.b64encode(b"benchmark-signing-key-0123456789").decode()
V1 = "/gpu-instance/openapi/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class Receiver:
    url: str
    ready_at: dict[str, float] = field(default_factory=dict)  # our id → arrival (unix)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if body.get("type") == "instance.ready":
            state.ready_at.setdefault(body["data"]["id"], time.time())
            state.arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


def spawn(command: list[str], work: Path, log: str, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[bytes]:
    with open(work / log, "w") as stderr:
        return subprocess.Popen(
            command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@asynccontextmanager
async def processes(
    work: Path, hook: str, extra_env: dict[str, str]
) -> AsyncIterator[tuple[str, str]]:
    """The simulator and the service, each its own process; yields (API URL, simulator URL)."""
    sim_port, api_port = free_port(), free_port()
    sim = spawn(
        [PYTHON, "-m", "service", "simulate", "--port", str(sim_port), "--api-key", NOVITA_KEY,
         "--app-startup-delay", "0", "--capacity", "1000", "--seed", "1"],
        work, "sim.log",
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{work}/bench.db",
        "NOVITA_API_KEY": NOVITA_KEY,
        "NOVITA_API_BASE_URL": f"http://127.0.0.1:{sim_port}{V1}",
        "API_KEYS": API_KEY,
        "WEBHOOK_URL": hook,
        "WEBHOOK_SECRET": SECRET,
        "ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
        "ALLOW_PRIVATE_PROBE_TARGETS": "true",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    service = None
    try:
        await wait_listening(sim_port)
        service = spawn(
            [PYTHON, "-m", "service", "serve", "--migrate", "--port", str(api_port)],
            work, "serve.log", env,
        )
        await wait_listening(api_port)
        yield f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{sim_port}"
    finally:
        for process in (service, sim):
            if process is not None:
                stop(process)


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Round:
    ready_lags: list[float]
    notified_lags: list[float]
    seen_lags: list[float]
    probe_lags: list[float]
    calls_per_minute: float  # in the minute from the first create
    calls_until_ready: int
    calls_by_path: dict[str, int]


async def one_round(count: int, extra_env: dict[str, str]) -> Round:
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        async with receiver() as hooks, processes(work, hooks.url, extra_env) as (api, sim):
            async with aiohttp.ClientSession() as http:
                ours = {"Authorization": f"Bearer {API_KEY}"}
                novita = {"Authorization": f"Bearer {NOVITA_KEY}"}

                async def sim_state() -> dict[str, Any]:
                    async with http.get(f"{sim}/_sim/state", headers=novita) as r:
                        return dict(await r.json())

                await asyncio.sleep(3)  # start-up reads (catalogue, first relist) done
                before = await sim_state()
                started = time.time()

                async def create(n: int) -> str:
                    body = {"name": f"lag-{n}", "productName": "RTX 4090 24GB",
                            "templateId": "212"}
                    async with http.post(f"{api}/api/instances", json=body, headers=ours) as r:
                        answer = await r.json()
                        if r.status not in (201, 202):
                            raise RuntimeError(f"create: {r.status} {answer}")
                        return str(answer["id"])

                ids = await asyncio.gather(*(create(n) for n in range(count)))
                async with asyncio.timeout(300):
                    while not set(ids) <= set(hooks.ready_at):
                        hooks.arrived.clear()
                        await hooks.arrived.wait()
                until_ready = await sim_state()
                await asyncio.sleep(max(0.0, started + 60 - time.time()))
                after = await sim_state()

                ready_lags, notified_lags, seen_lags, probe_lags = [], [], [], []
                for instance_id in ids:
                    async with http.get(f"{api}/api/instances/{instance_id}", headers=ours) as r:
                        mine = await r.json()
                    novita_id = mine["novitaInstanceId"]
                    async with http.get(f"{sim}/_sim/instances/{novita_id}", headers=novita) as r:
                        running_since = float((await r.json())["sim"]["runningSince"])
                    ready_lags.append(unix(mine["readyAt"]) - running_since)
                    seen_lags.append(unix(mine["runningAt"]) - running_since)
                    probe_lags.append(unix(mine["readyAt"]) - unix(mine["runningAt"]))
                    notified_lags.append(hooks.ready_at[instance_id] - running_since)
            by_path = {
                path: n - before["requestsByPath"].get(path, 0)
                for path, n in until_ready["requestsByPath"].items()
                if n - before["requestsByPath"].get(path, 0)
            }
            return Round(
                ready_lags,
                notified_lags,
                seen_lags,
                probe_lags,
                after["requestCount"] - before["requestCount"],
                until_ready["requestCount"] - before["requestCount"],
                by_path,
            )


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


async def run(counts: list[int], rounds: int, extra_env: dict[str, str]) -> None:
    for count in counts:
        ready: list[float] = []
        notified: list[float] = []
        seen: list[float] = []
        probed: list[float] = []
        rates: list[float] = []
        for number in range(1, rounds + 1):
            result = await one_round(count, extra_env)
            ready += result.ready_lags
            notified += result.notified_lags
            seen += result.seen_lags
            probed += result.probe_lags
            rates.append(result.calls_per_minute)
            print(
                f"  N={count} round {number}: ready {summary(result.ready_lags)}; "
                f"notified {summary(result.notified_lags)}; "
                f"(seen {summary(result.seen_lags)}, probed {summary(result.probe_lags)}); "
                f"{result.calls_per_minute:.0f} Novita calls in the first minute, "
                f"{result.calls_until_ready} until the last ready {result.calls_by_path}",
                flush=True,
            )
        print(
            f"N={count}: running → ready {summary(ready)}; running → instance.ready "
            f"notification {summary(notified)} (seen {summary(seen)}, probed "
            f"{summary(probed)}); Novita calls/min median "
            f"{statistics.median(rates):.0f} (limit 100)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,5,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    asyncio.run(run([int(c) for c in args.counts.split(",")], args.rounds, extra))


if __name__ == "__main__":
    main()
