"""`NovitaClient`: the only code that talks to Novita's GPU instance API v1.

Every call goes retry policy → (per attempt) breaker check → rate limiter → breaker
admission → one HTTP request → translation of any failure → parsing into frozen schemas.

Retry safety, per method (retried = up to `max_attempts` on 5xx, timeout, network, 429):

    method                              retried  why
    list_clusters, list_products        yes      reads
    get_template, list_registry_auths   yes      reads
    get_instance, list_instances        yes      reads (iter_instances: per page;
                                                 find_instances_named: filter, then paging)
    start/stop/restart_instance         yes      repeating is harmless; a repeat whose first
                                                 try landed answers "invalid state change"
                                                 (NovitaInvalidStateError): re-read status
    delete_instance                     yes      works from any state; a repeat may answer
                                                 not-found or invalid state ("gone/going")
    create_instance                     NEVER    an ambiguous create may have made an instance;
                                                 the provisioner looks it up by name first
    migrate_instance                    no       starts a migration job; not safely repeatable

Priority within the rate limit (`service.novita.limiter`): every method takes `priority`;
by default creates, actions and catalogue reads are URGENT, `get_instance` TRANSITIONAL
(a poll of a stable instance passes BACKGROUND) and listings BACKGROUND (the relist;
`find_instances_named`, part of a create, is URGENT).

Readings of the API the client finds out or tolerates (docs/novita-facts.md):

- List page base: `pageNum` 0 or 1 may be the first page. The first listing of a process
  reads pages 0 and 1 and compares them (the same instances: 0 is an alias of 1, the base
  is 1; else the base is 0); a refused page 0 also means 1. `page_base` remembers the
  answer. Every listing dedupes by id and stops once it has `total` instances (never on a
  short page alone), bounded by the page count `total` implies.
- Products: parsed one by one; one that does not parse is skipped and logged once.
- Errors: see `service.novita.errors` (tokens from `reason` or `message`; three not-found
  forms). Action answers may be `{}`, an empty body or `{instanceId, state}`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ValidationError

from service.clock import Clock, SystemClock
from service.errors import ConfigError
from service.novita.breaker import CircuitBreaker
from service.novita.client_status import ClientCounters, ClientStatus
from service.novita.errors import (
    HttpFailure,
    NovitaBadRequestError,
    NovitaError,
    NovitaNotFoundError,
    NovitaProtocolError,
    NovitaRateLimitedError,
    translate,
)
from service.novita.limiter import Priority, RateLimiter, SharedStarts
from service.novita.retry import RetryPolicy
from service.novita.schemas import (
    Cluster,
    CreateInstanceRequest,
    Instance,
    InstancePage,
    NetworkStorage,
    Product,
    RegistryAuth,
    Template,
    cpu_product,
)
from service.settings import Settings

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
Sleep = Callable[[float], Awaitable[None]]
# Transport failures the client turns into NovitaErrors; nothing else from aiohttp escapes.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
DEFAULT_CONNECTION_LIMIT = 32
DEFAULT_PAGE_SIZE = 50


class NovitaClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 3,
        rate_limit_per_minute: int = 100,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        shared_starts: SharedStarts | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("a Novita API key is required")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock: Clock = clock or SystemClock()
        self._session = session
        self._owns_session = session is None
        self._connection_limit = connection_limit
        self.breaker = breaker or CircuitBreaker(clock=self._clock)
        self._owns_limiter = limiter is None
        self.limiter = limiter or RateLimiter(
            rate_limit_per_minute, time=self._clock.monotonic, sleep=sleep, shared=shared_starts
        )
        self.retry = retry or RetryPolicy(max_attempts=max_attempts, sleep=sleep)
        self._counters = ClientCounters()
        self._closed = False
        # Set by the first 2xx answer: the base URL is right, so a bare 404 means not found.
        self.route_confirmed = False
        # 0 or 1 once a listing has found out which page number is the first; None before.
        self.page_base: int | None = None
        # What the list's `name` filter does: "substring" (documented), "exact", "ignored".
        self.name_filter: str | None = None
        self._skipped_products: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        breaker: CircuitBreaker | None = None,
        shared_starts: SharedStarts | None = None,
    ) -> NovitaClient:
        """Build from settings; `api_key`/`base_url` override them (e.g. the built-in
        simulator); `shared_starts` is the window of starts the limit is shared through."""
        key = api_key or (
            settings.novita_api_key.get_secret_value() if settings.novita_api_key else None
        )
        if not key:
            raise ConfigError("NOVITA_API_KEY is not set")
        return cls(
            base_url or settings.novita_api_base_url,
            key,
            timeout=settings.request_timeout,
            max_attempts=settings.max_retry_attempts,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            clock=clock,
            session=session,
            sleep=sleep,
            breaker=breaker,
            shared_starts=shared_starts,
        )

    def __repr__(self) -> str:
        return f"NovitaClient(base_url={self.base_url!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it; a session passed in stays open."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
        if self._owns_limiter:
            await self.limiter.close()

    def status(self) -> ClientStatus:
        c = self._counters
        return ClientStatus(
            breaker_state=self.breaker.state.value,
            breaker_retry_after=self.breaker.retry_after_seconds,
            breaker_times_opened=self.breaker.times_opened,
            limiter_backlog=self.limiter.backlog,
            limiter_paused_for=self.limiter.paused_for,
            requests=c.requests,
            retries=c.retries,
            errors=c.errors,
            errors_by_code=c.frozen_errors_by_code(),
            requests_by_endpoint=c.frozen_requests_by_endpoint(),
        )

    # -- catalogue -------------------------------------------------------------------------

    async def list_clusters(self) -> tuple[Cluster, ...]:
        body = await self._call("GET", "/clusters")
        return self._parse_each(Cluster, _field(body, "data", "GET /clusters"), "GET /clusters")

    async def list_products(
        self,
        cluster_id: str | None = None,
        gpu_num: int | None = None,
        product_name: str | None = None,
        min_cpu_per_gpu: int | None = None,
        min_memory_per_gpu: int | None = None,
        min_rootfs_size: int | None = None,
        billing_method: str | None = None,
    ) -> tuple[Product, ...]:
        params = {
            "clusterId": cluster_id,
            "gpuNum": gpu_num,
            "productName": product_name,
            "minCpuPerGpu": min_cpu_per_gpu,
            "minMemoryPerGpu": min_memory_per_gpu,
            "minRootFSSize": min_rootfs_size,
            "billingMethod": billing_method,
        }
        body = await self._call("GET", "/products", params=params)
        return self._parse_each(Product, _field(body, "data", "GET /products"), "GET /products")

    async def list_cpu_products(
        self, cluster_id: str | None = None, product_name: str | None = None
    ) -> tuple[Product, ...]:
        """CPU products, as `Product`s priced per instance-hour (see `cpu_product`)."""
        endpoint = "GET /cpu/products"
        params = {"clusterId": cluster_id, "productName": product_name}
        body = await self._call("GET", "/cpu/products", params=params)
        raw = _field(body, "data", endpoint)
        items = [cpu_product(item) for item in raw] if isinstance(raw, list) else raw
        return self._parse_each(Product, items, endpoint)

    async def list_network_storages(self, page_size: int = 100) -> tuple[NetworkStorage, ...]:
        """Every network storage of the account, each once.

        Pages are counted by `pageNo` (base unknown, like `pageNum`): pages are read until
        `total` distinct storages are seen, a page brings nothing new, or the pages `total`
        implies (plus one) are read.
        """
        endpoint = "GET /networkstorages/list"
        found: dict[str, NetworkStorage] = {}
        page_no: int | None = None  # first the server's default page, then 1, 2, ...
        stale = 0
        for read in range(1, 1000):
            params = {"pageSize": page_size, "pageNo": page_no}
            body = await self._call("GET", "/networkstorages/list", params=params)
            items = self._parse_each(NetworkStorage, _field(body, "data", endpoint), endpoint)
            fresh = [n for n in items if n.storage_id not in found]
            found.update((n.storage_id, n) for n in fresh)
            total = _optional_count(body)
            # Page 1 may repeat the default page (when pages count from 1): one stale page
            # is allowed, two are the end.
            stale = 0 if fresh else stale + 1
            if not items or total is None or len(found) >= total or stale > 1:
                break
            if read > -(-total // page_size) + 1:
                break
            page_no = read
        return tuple(found.values())

    async def get_template(self, template_id: str) -> Template:
        body = await self._call("GET", "/template", params={"templateId": template_id})
        raw = _field(body, "template", "GET /template")
        if not raw:
            raise NovitaNotFoundError(
                f"Novita has no template {template_id}", endpoint="GET /template"
            )
        return _parse(Template, raw, "GET /template")

    async def list_registry_auths(self) -> tuple[RegistryAuth, ...]:
        body = await self._call("GET", "/repository/auths")
        endpoint = "GET /repository/auths"
        return _parse_list(RegistryAuth, _field(body, "data", endpoint), endpoint)

    # -- instances -------------------------------------------------------------------------

    async def create_instance(self, request: CreateInstanceRequest) -> str:
        """Create an instance; return its Novita id. Never retried (see the module table)."""
        endpoint = "POST /gpu/instance/create"
        body = await self._call(
            "POST", "/gpu/instance/create", json_body=request.to_payload(), idempotent=False
        )
        instance_id = (body.get("id") or body.get("Id")) if isinstance(body, Mapping) else None
        if not instance_id:
            raise NovitaProtocolError(
                f"Novita {endpoint} answered without an instance id", endpoint=endpoint
            )
        return str(instance_id)

    async def get_instance(
        self, instance_id: str, *, priority: Priority = Priority.TRANSITIONAL
    ) -> Instance:
        body = await self._call(
            "GET", "/gpu/instance", params={"instanceId": instance_id}, priority=priority
        )
        # Documented unwrapped; a wrapped {"instance": {...}} is accepted too.
        if isinstance(body, Mapping) and "id" not in body and "instance" in body:
            body = body["instance"]
        return _parse(Instance, body, "GET /gpu/instance")

    async def list_instances(
        self,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_num: int | None = None,
        name: str | None = None,
        product_name: str | None = None,
        status: str | None = None,
        *,
        priority: Priority = Priority.BACKGROUND,
    ) -> InstancePage:
        """One page of instances; `page_num` is sent as given (see `page_base`), None
        asks for the first page (finding out the page base first if need be)."""
        if page_num is None:
            page_num = await self.discover_page_base(page_size, priority=priority) or 0
        params = {
            "pageSize": page_size,
            "pageNum": page_num,
            "name": name,
            "productName": product_name,
            "status": status,
        }
        body = await self._call("GET", "/gpu/instances", params=params, priority=priority)
        if not isinstance(body, Mapping):
            raise _unexpected("GET /gpu/instances")
        page = {"instances": body.get("instances"), "total": body.get("total")}
        page |= {"page_num": page_num, "page_size": page_size}
        return _parse(InstancePage, page, "GET /gpu/instances")

    async def discover_page_base(
        self, page_size: int = DEFAULT_PAGE_SIZE, *, priority: Priority = Priority.BACKGROUND
    ) -> int | None:
        """Find out (once) whether `pageNum` counts from 0 or 1; None if nothing tells yet."""
        if self.page_base is None:
            await self._first_pages(page_size, {}, priority)
        return self.page_base

    async def _first_pages(
        self, page_size: int, filters: Mapping[str, str | None], priority: Priority
    ) -> list[InstancePage]:
        """The first page (and, while the base is unknown, page 1 to compare with it)."""
        if self.page_base is not None:
            return [
                await self.list_instances(
                    page_size, self.page_base, **filters, priority=priority
                )
            ]
        try:
            zero = await self.list_instances(page_size, 0, **filters, priority=priority)
        except NovitaBadRequestError:
            self._learn_page_base(1, "page 0 refused")
            return [await self.list_instances(page_size, 1, **filters, priority=priority)]
        if zero.total is not None and len(zero.instances) >= zero.total:
            return [zero]  # everything fits on it: whichever the base, nothing else to read
        one = await self.list_instances(page_size, 1, **filters, priority=priority)
        ids_zero = [i.id for i in zero.instances]
        ids_one = [i.id for i in one.instances]
        if ids_zero and ids_one:
            shared = len(set(ids_zero) & set(ids_one))
            # The same page twice (allowing for an instance created between the two reads).
            if shared * 2 > min(len(ids_zero), len(ids_one)):
                self._learn_page_base(1, "pages 0 and 1 are the same")
                return [one]
            self._learn_page_base(0, "pages 0 and 1 differ")
            return [zero, one]
        if ids_zero:
            self._learn_page_base(0, "page 1 is empty after a full page 0")
            return [zero, one]
        if ids_one:
            self._learn_page_base(1, "page 0 is empty, page 1 is not")
            return [one]
        return [zero]  # nothing listed: nothing learnt

    def _learn_page_base(self, base: int, why: str) -> None:
        if self.page_base != base:
            log.info("novita.page_base", page_base=base, why=why)
        self.page_base = base

    async def iter_instances(
        self,
        page_size: int = DEFAULT_PAGE_SIZE,
        name: str | None = None,
        product_name: str | None = None,
        status: str | None = None,
        *,
        priority: Priority = Priority.BACKGROUND,
    ) -> AsyncIterator[Instance]:
        """Every matching instance, each once, page by page, whatever the page base.

        Stops when `total` distinct instances have been seen, on an empty page, after the
        number of pages `total` implies (plus one, for instances shifting meanwhile), or,
        when Novita gives no `total`, on a short page or one with nothing new.
        """
        filters = {"name": name, "product_name": product_name, "status": status}
        seen: set[str] = set()
        pages = await self._first_pages(page_size, filters, priority)
        assert self.page_base is not None or len(pages) == 1
        read = 0
        while True:
            for page in pages:
                read += 1
                fresh = [i for i in page.instances if i.id not in seen]
                for instance in fresh:
                    seen.add(instance.id)
                    yield instance
                if _last_page(page, fresh, len(seen), read, page_size):
                    return
            if self.page_base is None:
                return  # the first pages were empty
            pages = [
                await self.list_instances(
                    page_size, self.page_base + read, **filters, priority=priority
                )
            ]

    async def find_instances_named(
        self,
        name: str,
        match: Callable[[Instance], bool],
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        priority: Priority = Priority.URGENT,
    ) -> list[Instance]:
        """Instances `match` accepts, looked up through the list's `name` filter.

        The filter is documented as a substring match; should it match exactly (or not at
        all), an empty answer proves nothing, so every instance is then paged through and
        matched here. What the filter does is learnt from its answers (`name_filter`):
        once it is known to match substrings (or to be ignored), no fallback is needed.
        """
        needle = name.lower()
        if self.name_filter != "exact":
            found: list[Instance] = []
            async for item in self.iter_instances(page_size, name=name, priority=priority):
                if needle not in item.name.lower():
                    self._learn_name_filter("ignored")
                elif item.name.lower() != needle:
                    self._learn_name_filter("substring")
                if match(item):
                    found.append(item)
            if found or self.name_filter in ("substring", "ignored"):
                return found
        found = [i async for i in self.iter_instances(page_size, priority=priority) if match(i)]
        if any(needle in i.name.lower() and i.name.lower() != needle for i in found):
            self._learn_name_filter("exact")
        return found

    def _learn_name_filter(self, behaviour: str) -> None:
        if self.name_filter != behaviour:
            log.info("novita.name_filter", behaviour=behaviour)
        self.name_filter = behaviour

    async def start_instance(
        self, instance_id: str, *, priority: Priority = Priority.URGENT
    ) -> None:
        await self._call(
            "POST",
            "/gpu/instance/start",
            json_body={"instanceId": instance_id},
            priority=priority,
        )

    async def stop_instance(
        self, instance_id: str, *, priority: Priority = Priority.URGENT
    ) -> None:
        await self._call(
            "POST",
            "/gpu/instance/stop",
            json_body={"instanceId": instance_id},
            priority=priority,
        )

    async def restart_instance(
        self, instance_id: str, *, priority: Priority = Priority.URGENT
    ) -> None:
        await self._call(
            "POST",
            "/gpu/instance/restart",
            json_body={"instanceId": instance_id},
            priority=priority,
        )

    async def delete_instance(
        self, instance_id: str, *, priority: Priority = Priority.URGENT
    ) -> None:
        await self._call(
            "POST",
            "/gpu/instance/delete",
            json_body={"instanceId": instance_id},
            priority=priority,
        )

    async def migrate_instance(self, instance_id: str) -> None:
        await self._call(
            "POST",
            "/gpu/instance/migrate",
            json_body={"instanceId": instance_id},
            idempotent=False,
        )

    # -- transport -------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object] | None = None,
        json_body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
        priority: Priority = Priority.URGENT,
    ) -> Any:
        endpoint = f"{method} {path}"
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}

        async def attempt() -> Any:
            return await self._attempt(method, path, endpoint, query, json_body, priority)

        return await self.retry.call(
            attempt,
            endpoint=endpoint,
            idempotent=idempotent,
            on_retry=lambda _error: self._counters.retry_scheduled(),
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        endpoint: str,
        query: Mapping[str, str],
        json_body: Mapping[str, Any] | None,
        priority: Priority,
    ) -> Any:
        try:
            self.breaker.check()  # fail fast before queueing in the limiter
            await self.limiter.acquire(priority)
            admission = self.breaker.admit()
        except NovitaError as error:
            self._counters.error(error.code)
            raise
        try:
            result = await self._send(method, path, endpoint, query, json_body)
        except NovitaError as error:
            self.breaker.record(admission, error)
            self._counters.error(error.code)
            if isinstance(error, NovitaRateLimitedError) and error.retry_after:
                self.limiter.pause(error.retry_after)
            raise
        except BaseException as error:  # cancellation or a bug: neutral for the breaker
            self.breaker.record(admission, error)
            raise
        self.breaker.record(admission, None)
        return result

    async def _send(
        self,
        method: str,
        path: str,
        endpoint: str,
        query: Mapping[str, str],
        json_body: Mapping[str, Any] | None,
    ) -> Any:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._counters.request_sent(endpoint)
        started = time.perf_counter()
        try:
            async with self._get_session().request(
                method,
                self.base_url + path,
                params=query,
                json=json_body,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                raw = await response.read()
                status, response_headers = response.status, dict(response.headers)
        except _TRANSPORT_ERRORS as exc:
            # `from None`: aiohttp exceptions carry request_info with our headers (the key).
            raise self._translate(exc, endpoint) from None
        log.debug(
            "novita.response",
            endpoint=endpoint,
            status=status,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if not 200 <= status < 300:
            raise self._translate(HttpFailure(status, response_headers, raw), endpoint)
        self.route_confirmed = True
        return _decode_json(raw, endpoint)

    def _translate(self, failure: HttpFailure | BaseException, endpoint: str) -> NovitaError:
        return translate(
            failure,
            endpoint=endpoint,
            secrets=(self._api_key,),
            now=self._clock.now(),
            route_confirmed=self.route_confirmed,
        )

    def _parse_each(self, model: type[M], raw: Any, endpoint: str) -> tuple[M, ...]:
        """Parse a list item by item: one item that does not parse is skipped (and logged
        once per process), never the whole list."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise _unexpected(endpoint)
        parsed: list[M] = []
        for index, item in enumerate(raw):
            try:
                parsed.append(model.model_validate(item))
            except ValidationError as exc:
                item_id = item.get("id") if isinstance(item, Mapping) else None
                key = f"{endpoint} {item_id if isinstance(item_id, str) else index}"
                if key not in self._skipped_products:
                    self._skipped_products.add(key)
                    log.warning(
                        "novita.item_skipped",
                        endpoint=endpoint,
                        item=key.removeprefix(endpoint + " "),
                        error=_invalid(exc, endpoint).message,
                    )
        return tuple(parsed)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the Novita client is closed")
        if self._session is None:
            # Created on first use: a ClientSession must be made inside the running loop.
            connector = aiohttp.TCPConnector(limit=self._connection_limit, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session


def _optional_count(body: Any) -> int | None:
    total = body.get("total") if isinstance(body, Mapping) else None
    try:
        return int(total) if total is not None and not isinstance(total, bool) else None
    except (TypeError, ValueError):
        return None


def _last_page(
    page: InstancePage, fresh: list[Instance], seen: int, read: int, page_size: int
) -> bool:
    if not page.instances:
        return True
    if page.total is not None:
        pages_total = -(-page.total // page_size)
        return seen >= page.total or read > pages_total
    return len(page.instances) < page_size or not fresh


def _decode_json(raw: bytes, endpoint: str) -> Any:
    if not raw.strip():
        return {}  # restart/delete may answer with an empty body
    try:
        return json.loads(raw)
    except ValueError:
        raise _unexpected(endpoint) from None


def _field(body: Any, name: str, endpoint: str) -> Any:
    if not isinstance(body, Mapping):
        raise _unexpected(endpoint)
    return body.get(name)


def _parse(model: type[M], raw: Any, endpoint: str) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, endpoint) from None


def _parse_list(model: type[M], raw: Any, endpoint: str) -> tuple[M, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _unexpected(endpoint)
    return tuple(_parse(model, item, endpoint) for item in raw)


def _invalid(exc: ValidationError, endpoint: str) -> NovitaProtocolError:
    # Only field paths: input values may hold credentials (registry passwords, env values).
    where = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()[:5])
    return NovitaProtocolError(
        f"Novita {endpoint} answered data this client cannot parse (at {where})",
        endpoint=endpoint,
    )


def _unexpected(endpoint: str) -> NovitaProtocolError:
    return NovitaProtocolError(
        f"Novita {endpoint} answered with an unexpected body", endpoint=endpoint
    )
