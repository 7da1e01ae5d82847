"""`LifecycleClient`: the REST API of novita-lifecycle over one aiohttp session.

    async with LifecycleClient("http://127.0.0.1:8080", api_key) as client:
        created = await client.create(name="trainer", product_name="RTX 4090 24GB",
                                      template_id=212, idempotency_key="trainer-1")
        ready = await client.wait_until(created["id"], "ready", timeout=900)

Every method either returns the answer's JSON (typed in `models`) or raises one of the
exceptions in `errors`; no aiohttp exception leaves this class.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast
from urllib.parse import quote

import aiohttp
from yarl import URL

from novita_lifecycle_client.backoff import Backoff
from novita_lifecycle_client.errors import (
    InstanceFailedError,
    RateLimitedError,
    TerminalStatusError,
    TransportError,
    UnavailableError,
    WaitTimeoutError,
    error_from_response,
)
from novita_lifecycle_client.models import (
    STATUSES,
    TERMINAL_STATUSES,
    Instance,
    InstanceEvent,
    Notification,
    NotificationDetail,
    Plan,
    StreamEvent,
)
from novita_lifecycle_client.sse import messages

__all__ = ["LifecycleClient", "Page"]

USER_AGENT = "novita-lifecycle-client/0.1"
STREAM_EVENT_TYPE = "instance-event"
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
QueryParams = builtins.list[tuple[str, str]]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: builtins.list[T]
    next_cursor: str | None


def camel_case(name: str) -> str:
    """`product_name` → `productName`; names already in camelCase are kept."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def query_value(value: object) -> str:
    """How a Python value is written in a query string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (builtins.list, tuple, set, frozenset)):
        return ",".join(query_value(item) for item in value)
    return str(value)


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("datetimes sent to the service must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _segment(value: str) -> str:
    return quote(value, safe="")


class LifecycleClient:
    """An async client of one novita-lifecycle service, authenticated with one API key.

    Give it a `session` to share one aiohttp connection pool (it is then not closed
    here); otherwise the client opens its own and closes it on exit / `aclose()`.
    `sleep` and `clock` (monotonic seconds) are what `wait_until` waits with: tests pass
    fakes to step time instead of sleeping.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:  # never the key
        return f"LifecycleClient({self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- transport ------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        url = URL(self.base_url + path, encoded=True)
        all_headers = {**self._headers, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method, url, params=params, data=data, headers=all_headers
            ) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
                content_type = response.content_type
        except aiohttp.ClientError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise TransportError(f"{method} {path}: no answer in time") from exc
        if status >= 400:
            raise error_from_response(status, raw, answer_headers)
        if not raw:
            return None
        if content_type == "application/json" or content_type.endswith("+json"):
            return json.loads(raw)
        return raw.decode("utf-8", "replace")

    # --- instances ------------------------------------------------------------------------

    async def create(self, *, idempotency_key: str | None = None, **fields: Any) -> Instance:
        """`POST /api/instances`; answers the instance, `pending`, at once (202).

        Field names may be the API's (`productName`) or snake_case (`product_name`): the
        top-level ones are converted, nested values are sent as given. Pass an
        `idempotency_key` to make retrying a create that may have reached the service safe.
        """
        body = {camel_case(name): value for name, value in fields.items()}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(
            Instance, await self._request("POST", "/api/instances", body=body, headers=headers)
        )

    async def plan(self, **fields: Any) -> Plan:
        """`POST /api/instances?dryRun=true`: where `create(**fields)` would land (region,
        cluster, product, price per GPU-hour and per hour) and every candidate in the order
        it would be tried, with the reason for each. Nothing is created; an unknown region,
        product or template raises `ValidationError` naming each bad field."""
        body = {camel_case(name): value for name, value in fields.items()}
        params: QueryParams = [("dryRun", "true")]
        return cast(Plan, await self._request("POST", "/api/instances", params=params, body=body))

    async def get(self, instance_id: str) -> Instance:
        """One instance, by our id or by its Novita id."""
        path = f"/api/instances/{_segment(instance_id)}"
        return cast(Instance, await self._request("GET", path))

    async def list_page(
        self,
        *,
        status: str | Iterable[str] | None = None,
        region: str | None = None,
        product: str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Instance]:
        """One page of `GET /api/instances`, newest first."""
        params: QueryParams = [("limit", str(limit))]
        if status is not None:
            params.append(("status", status if isinstance(status, str) else ",".join(status)))
        for key, value in (("region", region), ("product", product), ("name", name)):
            if value is not None:
                params.append((key, value))
        params.extend(("label", f"{key}:{value}") for key, value in (labels or {}).items())
        if cursor:
            params.append(("cursor", cursor))
        answer = await self._request("GET", "/api/instances", params=params)
        return Page(cast(builtins.list[Instance], answer["items"]), answer.get("nextCursor"))

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        region: str | None = None,
        product: str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[Instance]:
        """Every instance matching the filters, newest first, fetching pages as needed."""
        statuses = None if status is None else [status] if isinstance(status, str) else [*status]
        cursor: str | None = None
        while True:
            page = await self.list_page(
                status=statuses,
                region=region,
                product=product,
                name=name,
                labels=labels,
                limit=page_size,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def events(
        self, instance_id: str, *, after_sequence: int = 0, page_size: int = 100
    ) -> AsyncIterator[InstanceEvent]:
        """The instance's history, oldest first, from `after_sequence` on."""
        path = f"/api/instances/{_segment(instance_id)}/events"
        cursor = str(after_sequence)
        while True:
            params = [("limit", str(page_size)), ("cursor", cursor)]
            answer = await self._request("GET", path, params=params)
            for item in answer["items"]:
                yield cast(InstanceEvent, item)
            if not answer.get("nextCursor"):
                return
            cursor = answer["nextCursor"]

    async def watch(
        self,
        *,
        instance: str | Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        status: str | Iterable[str] | None = None,
        last_event_id: str | None = None,
        idle_timeout: float = 60.0,
        backoff: Backoff | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Instance events as they happen (`GET /api/events`), forever.

        Filters: `instance` (ids), `labels` (all must match), `status` (the status moved
        to). Give `last_event_id` (an event's `id`) to start after that event; otherwise
        the stream starts now. When the connection drops, ends, or stays silent longer
        than `idle_timeout` (the service sends heartbeats), it reconnects with the last
        id received, after a growing, jittered delay (`backoff`, reset by each event), so
        no event is missed or repeated. 503/429 answers wait for their `Retry-After`;
        other error answers (401, 422 naming a bad filter) are raised.
        """
        params: QueryParams = []
        if instance is not None:
            ids = [instance] if isinstance(instance, str) else [*instance]
            params.extend(("instance", value) for value in ids)
        params.extend(("label", f"{key}:{value}") for key, value in (labels or {}).items())
        if status is not None:
            params.append(("status", status if isinstance(status, str) else ",".join(status)))
        schedule = backoff or self.backoff
        url = URL(self.base_url + "/api/events", encoded=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=idle_timeout)
        attempt = 0
        while True:
            headers = {**self._headers, "Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            retry_after: float | None = None
            try:
                async with self._http().get(
                    url, params=params, headers=headers, timeout=timeout
                ) as response:
                    if response.status >= 400:
                        error = error_from_response(
                            response.status, await response.read(), response.headers
                        )
                        if not isinstance(error, UnavailableError | RateLimitedError):
                            raise error
                        retry_after = error.retry_after
                    else:
                        async for message in messages(response.content):
                            if message.event != STREAM_EVENT_TYPE:
                                continue
                            event = cast(StreamEvent, json.loads(message.data))
                            last_event_id = message.id or event["id"]
                            attempt = 0
                            yield event
            except (aiohttp.ClientError, TimeoutError):
                pass  # the connection dropped or went silent: reconnect below
            delay = schedule.delay(attempt)
            attempt += 1
            if retry_after is not None:
                delay = max(delay, retry_after)
            await self._sleep(delay)

    async def _action(self, method: str, instance_id: str, suffix: str = "") -> Instance:
        path = f"/api/instances/{_segment(instance_id)}{suffix}"
        return cast(Instance, await self._request(method, path))

    async def start(self, instance_id: str) -> Instance:
        """Ask for a start; answers the instance `starting` (the provider confirms later)."""
        return await self._action("POST", instance_id, "/start")

    async def stop(self, instance_id: str) -> Instance:
        return await self._action("POST", instance_id, "/stop")

    async def restart(self, instance_id: str) -> Instance:
        return await self._action("POST", instance_id, "/restart")

    async def delete(self, instance_id: str) -> Instance:
        """Ask for a delete; answers the instance `deleting` (or `deleted` if never created)."""
        return await self._action("DELETE", instance_id)

    async def touch_last_used(self, instance_id: str, at: datetime | None = None) -> Instance:
        """Record that the instance was used (at `at`, default now): the idle auto-stop
        counts from the latest such heartbeat."""
        path = f"/api/instances/{_segment(instance_id)}/last-used"
        body = {"lastUsedAt": iso(at)} if at is not None else {}
        return cast(Instance, await self._request("PUT", path, body=body))

    async def wait_until(
        self,
        instance_id: str,
        status: str | Iterable[str],
        *,
        # Measured on the injected clock (tests step it), hence not asyncio.timeout.
        timeout: float = 900.0,  # noqa: ASYNC109
        backoff: Backoff | None = None,
        on_poll: Callable[[Instance], object] | None = None,
    ) -> Instance:
        """Poll until the instance has one of the wanted statuses; answer it.

        Polls right away, then after growing, jittered delays (`backoff`, default
        `self.backoff`), the last one cut short so a poll happens at the deadline.
        `running` is also satisfied by `ready` (a ready instance is running, and a poll
        may miss the moment in between). 503/429 answers and transport errors are
        retried until the timeout, no sooner than their `Retry-After`.

        Raises `InstanceFailedError` as soon as the instance is `failed` (unless that is
        wanted), `TerminalStatusError` if it is `deleted`, `WaitTimeoutError` on timeout;
        `on_poll` sees every state fetched.
        """
        wanted = {status} if isinstance(status, str) else set(status)
        unknown = wanted - set(STATUSES)
        if not wanted or unknown:
            raise ValueError(f"unknown statuses {sorted(unknown)}; known: {', '.join(STATUSES)}")
        if "running" in wanted:
            wanted.add("ready")
        schedule = backoff or self.backoff
        deadline = self._clock() + timeout
        last: Instance | None = None
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                last = await self.get(instance_id)
            except (UnavailableError, RateLimitedError) as exc:
                retry_after = exc.retry_after
            except TransportError:
                pass
            else:
                if on_poll is not None:
                    on_poll(last)
                current = last["status"]
                if current in wanted:
                    return last
                if current == "failed":
                    reason = last.get("statusReason") or "no reason given"
                    raise InstanceFailedError(
                        f"instance {instance_id} failed: {reason}", instance=last
                    )
                if current in TERMINAL_STATUSES:
                    raise TerminalStatusError(
                        f"instance {instance_id} is {current}; it will never be "
                        f"{' or '.join(sorted(wanted))}",
                        instance=last,
                    )
            remaining = deadline - self._clock()
            if remaining <= 0:
                seen = last["status"] if last else "unknown"
                raise WaitTimeoutError(
                    f"instance {instance_id} is still {seen} after {timeout:g}s", instance=last
                )
            delay = schedule.delay(attempt)
            attempt += 1
            if retry_after is not None:
                delay = max(delay, retry_after)
            await self._sleep(min(delay, remaining))

    # --- notifications --------------------------------------------------------------------

    async def list_notifications(
        self,
        *,
        instance_id: str | None = None,
        status: str | None = None,
        type: str | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[Notification]:
        """Every notification matching the filters (`status`: pending, delivered, failed,
        cancelled, no_target; `type`: e.g. `instance.ready`), without payloads."""
        cursor: str | None = None
        while True:
            params: QueryParams = [("limit", str(page_size))]
            for key, value in (("instanceId", instance_id), ("status", status), ("type", type)):
                if value is not None:
                    params.append((key, value))
            if cursor:
                params.append(("cursor", cursor))
            answer = await self._request("GET", "/api/notifications", params=params)
            for item in answer["items"]:
                yield cast(Notification, item)
            cursor = answer.get("nextCursor")
            if not cursor:
                return

    async def get_notification(self, notification_id: str) -> NotificationDetail:
        """One notification with its payload and every delivery attempt (`attemptLog`)."""
        path = f"/api/notifications/{_segment(notification_id)}"
        return cast(NotificationDetail, await self._request("GET", path))

    async def redeliver(self, notification_id: str) -> Notification:
        """Send a notification again (same `webhook-id`): due at once, a fresh ladder."""
        path = f"/api/notifications/{_segment(notification_id)}/redeliver"
        return cast(Notification, await self._request("POST", path))

    async def redeliver_failed_since(
        self, since: datetime, *, instance_id: str | None = None
    ) -> int:
        """Redeliver every dead-lettered notification created since `since`; answers how
        many were scheduled."""
        body: dict[str, Any] = {"since": iso(since)}
        if instance_id is not None:
            body["instanceId"] = instance_id
        answer = await self._request("POST", "/api/notifications/redeliver", body=body)
        return int(answer["redelivered"])

    # --- reports --------------------------------------------------------------------------

    async def report(self, name: str, **params: Any) -> Any:
        """`GET /api/reports/{name}` (fleet, usage, provisioning, reliability) with
        `params` as the query string: names as the API's (`groupBy`) or snake_case
        (`group_by`), datetimes as ISO 8601, sequences comma-joined, `None` left out.
        Answers the parsed JSON document, or the text for `format="csv"` / `"table"`."""
        query: QueryParams = [
            (camel_case(key), query_value(value))
            for key, value in params.items()
            if value is not None
        ]
        return await self._request("GET", f"/api/reports/{_segment(name)}", params=query)
