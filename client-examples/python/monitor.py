"""Watch every instance and print what changes: new instances, status moves, removals.

    SERVICE_URL=http://127.0.0.1:8080 SERVICE_API_KEY=... python monitor.py

Environment: SERVICE_URL, SERVICE_API_KEY (required); MONITOR_INTERVAL (seconds between
sweeps, default 5), MONITOR_DURATION (stop after that many seconds; default: run until
Ctrl-C / SIGTERM), LABEL (only instances with this KEY:VALUE label). WEBHOOK_SECRET is not
needed: this polls, for push use webhook_receiver.py.

One line per change on stdout: `+ <id> <name> <status>` for an instance seen the first
time, `~ <id> <name> <from> -> <to> (<reason>)` for a status change, `- <id> <name>` when
one is no longer listed. A failed sweep is reported on stderr and retried next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

from novita_lifecycle_client import Instance, LifecycleClient, LifecycleClientError


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"monitor: set {name}")
    return value


def line(mark: str, text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {mark} {text}", flush=True)


class Watcher:
    def __init__(self) -> None:
        self.known: dict[str, Instance] = {}
        self.first = True

    def sweep(self, instances: list[Instance]) -> None:
        seen = {instance["id"]: instance for instance in instances}
        for instance_id, instance in seen.items():
            before = self.known.get(instance_id)
            if before is None:
                if self.first and instance["status"] == "deleted":
                    continue  # long gone before we started: not news
                line("+", f"{instance_id} {instance['name']} {instance['status']}")
            elif before["status"] != instance["status"]:
                reason = f" ({instance['statusReason']})" if instance["statusReason"] else ""
                line(
                    "~",
                    f"{instance_id} {instance['name']} {before['status']} -> "
                    f"{instance['status']}{reason}",
                )
        for instance_id in self.known.keys() - seen.keys():
            line("-", f"{instance_id} {self.known[instance_id]['name']}")
        self.known = seen
        self.first = False


async def main() -> int:
    base_url = env("SERVICE_URL", "http://127.0.0.1:8080")
    api_key = env("SERVICE_API_KEY")
    interval = float(env("MONITOR_INTERVAL", "5"))
    duration = float(os.environ.get("MONITOR_DURATION") or 0)
    labels = None
    if os.environ.get("LABEL"):
        key, _, value = os.environ["LABEL"].partition(":")
        labels = {key: value}

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    if duration:
        loop.call_later(duration, stop.set)

    watcher = Watcher()
    async with LifecycleClient(base_url, api_key) as client:
        print(f"watching {base_url} every {interval:g}s", file=sys.stderr, flush=True)
        while not stop.is_set():
            try:
                watcher.sweep([instance async for instance in client.list(labels=labels)])
            except LifecycleClientError as exc:
                print(f"sweep failed: {exc}", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    print(f"stopped; {len(watcher.known)} instance(s) known", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
