"""Create N instances with at most C requests in flight, wait for each, summarise.

    SERVICE_URL=http://127.0.0.1:8080 SERVICE_API_KEY=... BATCH_SIZE=5 python batch_create.py

Environment: SERVICE_URL, SERVICE_API_KEY (required); BATCH_SIZE (default 5), CONCURRENCY
(creates in flight, default 3), BATCH_ID (default random; rerunning with the same BATCH_ID
is safe: every create carries the idempotency key `<BATCH_ID>-<n>`), PRODUCT_NAME
(default "RTX 4090 24GB"), TEMPLATE_ID (default 212), REGION, WEBHOOK_URL, WAIT_FOR
(default ready; `none` = only create), WAIT_TIMEOUT (seconds per instance, default 900),
POLL_MAX_DELAY (longest gap between polls, seconds, default 5),
DELETE_AFTER=true. WEBHOOK_SECRET is not needed here.

One line per instance as it finishes on stderr, then the summary as one JSON line on
stdout: `{"requested": N, "outcomes": {"ready": 4, "failed": 1}, "instances": [...]}`.
Outcomes: the awaited status, `created` (WAIT_FOR=none), `failed`, `deleted`, `timeout`,
`error:<CODE>` when the service refused the create, or `interrupted` (Ctrl-C or SIGTERM:
the summary is still printed, exit code 4). Exit code 0 if all succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import Counter
from typing import Any

from novita_lifecycle_client import (
    Backoff,
    InstanceFailedError,
    LifecycleClient,
    ServiceAPIError,
    TerminalStatusError,
    TransportError,
    WaitTimeoutError,
)


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"batch_create: set {name}")
    return value


async def create_one(
    client: LifecycleClient,
    number: int,
    *,
    batch_id: str,
    fields: dict[str, Any],
    gate: asyncio.Semaphore,
    wait_for: str,
    wait_timeout: float,
) -> dict[str, Any]:
    result: dict[str, Any] = {"n": number, "id": None}
    try:
        async with gate:
            created = await client.create(
                **fields,
                name=f"{batch_id}-{number}",
                labels={"batch": batch_id},
                idempotency_key=f"{batch_id}-{number}",
            )
        result["id"] = created["id"]
        if wait_for == "none":
            result["outcome"] = "created"
        else:
            done = await client.wait_until(created["id"], wait_for, timeout=wait_timeout)
            result["outcome"] = wait_for  # `running` is also met by `ready`
            result["status"] = done["status"]
            result["region"] = done["region"]
    except InstanceFailedError as exc:
        result["outcome"] = "failed"
        result["reason"] = exc.instance.get("statusReason") if exc.instance else None
    except TerminalStatusError:
        result["outcome"] = "deleted"
    except WaitTimeoutError:
        result["outcome"] = "timeout"
    except ServiceAPIError as exc:
        result["outcome"] = f"error:{exc.code}"
        result["reason"] = exc.message
    except TransportError as exc:
        result["outcome"] = "error:TRANSPORT"
        result["reason"] = exc.message
    except asyncio.CancelledError:
        # Stopped by Ctrl-C or SIGTERM (main cancels only these tasks): report, don't raise.
        result["outcome"] = "interrupted"
    print(f"#{number} {result['id']}: {result['outcome']}", file=sys.stderr, flush=True)
    return result


async def main() -> int:
    base_url = env("SERVICE_URL", "http://127.0.0.1:8080")
    api_key = env("SERVICE_API_KEY")
    size = int(env("BATCH_SIZE", "5"))
    concurrency = int(env("CONCURRENCY", "3"))
    batch_id = env("BATCH_ID", f"batch-{uuid.uuid4().hex[:8]}")
    wait_for = env("WAIT_FOR", "ready")
    timeout = float(env("WAIT_TIMEOUT", "900"))
    fields: dict[str, Any] = {
        "product_name": env("PRODUCT_NAME", "RTX 4090 24GB"),
        "template_id": env("TEMPLATE_ID", "212"),
    }
    for variable, field in (("REGION", "region"), ("WEBHOOK_URL", "webhook_url")):
        if os.environ.get(variable):
            fields[field] = os.environ[variable]
    if size < 1 or concurrency < 1:
        sys.exit("batch_create: BATCH_SIZE and CONCURRENCY must be at least 1")

    gate = asyncio.Semaphore(concurrency)
    backoff = Backoff(max_delay=float(env("POLL_MAX_DELAY", "5")))
    async with LifecycleClient(base_url, api_key, backoff=backoff) as client:
        tasks = [
            asyncio.create_task(
                create_one(
                    client,
                    number,
                    batch_id=batch_id,
                    fields=fields,
                    gate=gate,
                    wait_for=wait_for,
                    wait_timeout=timeout,
                )
            )
            for number in range(1, size + 1)
        ]

        def stop() -> None:
            print("stopping: summarising what finished", file=sys.stderr, flush=True)
            for task in tasks:
                task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                asyncio.get_running_loop().add_signal_handler(signum, stop)
        # Only now: a signal that arrives once this line is out is handled, not fatal.
        print(f"creating {size} instance(s) as {batch_id}", file=sys.stderr, flush=True)
        finished = await asyncio.gather(*tasks, return_exceptions=True)
        results: list[dict[str, Any]] = [
            # A task stopped before it began has no result of its own.
            {"n": n, "id": None, "outcome": "interrupted"} if isinstance(r, BaseException) else r
            for n, r in enumerate(finished, start=1)
        ]
        if os.environ.get("DELETE_AFTER", "").lower() in {"1", "true", "yes"}:
            for result in results:
                if result["id"]:
                    try:
                        await client.delete(result["id"])
                    except ServiceAPIError as exc:
                        print(f"delete {result['id']}: {exc}", file=sys.stderr, flush=True)
    outcomes = Counter(result["outcome"] for result in results)
    summary = {"batch": batch_id, "requested": size, "outcomes": dict(outcomes)}
    print(json.dumps({**summary, "instances": results}), flush=True)
    wanted = {"created"} if wait_for == "none" else {wait_for}
    if "interrupted" in outcomes:
        return 4
    return 0 if set(outcomes) <= wanted else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
