"""Create one GPU instance and wait until it is ready (its ports answer).

    SERVICE_URL=http://127.0.0.1:8080 SERVICE_API_KEY=... python create_and_wait.py

Environment: SERVICE_URL, SERVICE_API_KEY (required); INSTANCE_NAME, PRODUCT_NAME
(default "RTX 4090 24GB"), TEMPLATE_ID (default 212), REGION, WEBHOOK_URL (where the
service should send this instance's notifications), WAIT_FOR (default ready; `running`
does not wait for the readiness probe), WAIT_TIMEOUT (seconds, default 900),
POLL_MAX_DELAY (longest gap between polls, seconds, default 5),
DELETE_AFTER=true (delete the instance once it got there). WEBHOOK_SECRET is not needed
here: the service signs, the receiver verifies.

Prints progress to stderr and the final instance as one JSON line on stdout. Exit code 0
when the status was reached, 1 if the instance failed or the wait timed out, 2 for a
configuration error, 3 if the service refused the request, 4 if stopped by Ctrl-C or
SIGTERM (the instance as last seen is printed; it keeps running at the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid

from novita_lifecycle_client import (
    Backoff,
    Instance,
    LifecycleClient,
    ServiceAPIError,
    TransportError,
    WaitError,
)


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"create_and_wait: set {name}")
    return value


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def main() -> int:
    base_url = env("SERVICE_URL", "http://127.0.0.1:8080")
    api_key = env("SERVICE_API_KEY")
    name = env("INSTANCE_NAME", f"example-{uuid.uuid4().hex[:8]}")
    wait_for = env("WAIT_FOR", "ready")
    timeout = float(env("WAIT_TIMEOUT", "900"))
    fields: dict[str, object] = {
        "name": name,
        "product_name": env("PRODUCT_NAME", "RTX 4090 24GB"),
        "template_id": env("TEMPLATE_ID", "212"),
    }
    for variable, field in (("REGION", "region"), ("WEBHOOK_URL", "webhook_url")):
        if os.environ.get(variable):
            fields[field] = os.environ[variable]

    last_status: list[str] = []
    last_seen: list[Instance] = []

    def on_poll(instance: Instance) -> None:
        last_seen[:] = [instance]
        if not last_status or last_status[-1] != instance["status"]:
            last_status.append(instance["status"])
            progress(f"  {time.strftime('%H:%M:%S')} {instance['id']} is {instance['status']}")

    # Ctrl-C or SIGTERM cancels the work; the summary below still runs.
    stopped = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None

    def stop() -> None:
        stopped.set()
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signum, stop)

    backoff = Backoff(max_delay=float(env("POLL_MAX_DELAY", "5")))
    async with LifecycleClient(base_url, api_key, backoff=backoff) as client:
        try:
            # The name doubles as the idempotency key: running this again after a lost
            # answer returns the same instance instead of creating a second one.
            created = await client.create(**fields, idempotency_key=f"create-{name}")
            last_seen[:] = [created]
            progress(f"created {created['id']} ({name}); waiting until {wait_for}")
            instance = await client.wait_until(
                created["id"], wait_for, timeout=timeout, on_poll=on_poll
            )
        except WaitError as exc:
            progress(f"gave up: {exc}")
            if exc.instance is not None:
                print(json.dumps(exc.instance))
            return 1
        except ServiceAPIError as exc:
            progress(f"the service refused: {exc} details={exc.details}")
            return 3
        except TransportError as exc:
            progress(f"cannot reach {base_url}: {exc}")
            return 3
        except asyncio.CancelledError:
            if not stopped.is_set():
                raise
            task.uncancel()
            if last_seen:
                seen = last_seen[0]
                progress(f"interrupted: {seen['id']} is {seen['status']} (it keeps going)")
                print(json.dumps(seen), flush=True)
            else:
                progress("interrupted before the instance was created")
            return 4
        progress(f"{instance['id']} is {instance['status']}: {instance['portMappings']}")
        print(json.dumps(instance), flush=True)
        if os.environ.get("DELETE_AFTER", "").lower() in {"1", "true", "yes"}:
            deleted = await client.delete(instance["id"])
            progress(f"delete requested: {deleted['id']} is {deleted['status']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
