"""`NovitaClient`: the only code that talks to Novita's GPU instance API v1.

Every call goes retry policy → (per attempt) breaker check → rate limiter → breaker
admission → one HTTP request → translation of any failure → parsing into frozen schemas.

Retry safety, per method (retried = up to `max_attempts` on 5xx, timeout, network, 429):

    method                              retried  why
    list_clusters, list_products        yes      reads
    get_template, list_registry_auths   yes      reads
    get_instance, list_instances        yes      reads (iter_instances: per page)
    start/stop/restart_instance         yes      repeating is harmless; a repeat whose first
                                                 try landed answers "invalid state change"
                                                 (NovitaInvalidStateError): re-read status
    delete_instance                     yes      works from any state; a repeat may answer
                                                 not-found or invalid state ("gone/going")
    create_instance                     NEVER    an ambiguous create may have made an instance;
                                                 the provisioner looks it up by name first
    migrate_instance                    no       starts a migration job; not safely repeatable
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
from service.novita.errors import (
    HttpFailure,
    NovitaError,
    NovitaNotFoundError,
    NovitaProtocolError,
    NovitaRateLimitedError,
    translate,
)
from service.novita.limiter import RateLimiter
from service.novita.retry import RetryPolicy
from service.novita.schemas import (
    Cluster,
    CreateInstanceRequest,
    Instance,
    InstancePage,
    Product,
    RegistryAuth,
    Template,
)
from service.novita.stats import ClientCounters, ClientStatus
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
        self.limiter = limiter or RateLimiter(
            rate_limit_per_minute, time=self._clock.monotonic, sleep=sleep
        )
        self.retry = retry or RetryPolicy(max_attempts=max_attempts, sleep=sleep)
        self._counters = ClientCounters()
        self._closed = False

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
    ) -> NovitaClient:
        """Build from settings; `api_key`/`base_url` override them (e.g. the built-in simulator)."""
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
        return _parse_list(Cluster, _field(body, "data", "GET /clusters"), "GET /clusters")

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
        return _parse_list(Product, _field(body, "data", "GET /products"), "GET /products")

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

    async def get_instance(self, instance_id: str) -> Instance:
        body = await self._call("GET", "/gpu/instance", params={"instanceId": instance_id})
        # Documented unwrapped; a wrapped {"instance": {...}} is accepted too.
        if isinstance(body, Mapping) and "id" not in body and "instance" in body:
            body = body["instance"]
        return _parse(Instance, body, "GET /gpu/instance")

    async def list_instances(
        self,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_num: int = 1,
        name: str | None = None,
        product_name: str | None = None,
        status: str | None = None,
    ) -> InstancePage:
        """One page of instances; `page_num` counts from 1."""
        params = {
            "pageSize": page_size,
            "pageNum": page_num,
            "name": name,
            "productName": product_name,
            "status": status,
        }
        body = await self._call("GET", "/gpu/instances", params=params)
        if not isinstance(body, Mapping):
            raise _unexpected("GET /gpu/instances")
        page = {"instances": body.get("instances"), "total": body.get("total")}
        page |= {"page_num": page_num, "page_size": page_size}
        return _parse(InstancePage, page, "GET /gpu/instances")

    async def iter_instances(
        self,
        page_size: int = DEFAULT_PAGE_SIZE,
        name: str | None = None,
        product_name: str | None = None,
        status: str | None = None,
    ) -> AsyncIterator[Instance]:
        """Every matching instance, page by page.

        Stops on a short or empty page, when `total` is reached, or when a page brings no
        instance not seen yet (a server ignoring `pageNum` would otherwise loop forever).
        Instances shifting between pages while listing are yielded once.
        """
        seen: set[str] = set()
        page_num = 1
        while True:
            page = await self.list_instances(page_size, page_num, name, product_name, status)
            fresh = [i for i in page.instances if i.id not in seen]
            for instance in fresh:
                seen.add(instance.id)
                yield instance
            if (
                len(page.instances) < page_size
                or not fresh
                or (page.total is not None and page_num * page_size >= page.total)
            ):
                return
            page_num += 1

    async def start_instance(self, instance_id: str) -> None:
        await self._call("POST", "/gpu/instance/start", json_body={"instanceId": instance_id})

    async def stop_instance(self, instance_id: str) -> None:
        await self._call("POST", "/gpu/instance/stop", json_body={"instanceId": instance_id})

    async def restart_instance(self, instance_id: str) -> None:
        await self._call("POST", "/gpu/instance/restart", json_body={"instanceId": instance_id})

    async def delete_instance(self, instance_id: str) -> None:
        await self._call("POST", "/gpu/instance/delete", json_body={"instanceId": instance_id})

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
    ) -> Any:
        endpoint = f"{method} {path}"
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}

        async def attempt() -> Any:
            return await self._attempt(method, path, endpoint, query, json_body)

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
    ) -> Any:
        try:
            self.breaker.check()  # fail fast before queueing in the limiter
            await self.limiter.acquire()
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
        return _decode_json(raw, endpoint)

    def _translate(self, failure: HttpFailure | BaseException, endpoint: str) -> NovitaError:
        return translate(
            failure, endpoint=endpoint, secrets=(self._api_key,), now=self._clock.now()
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the Novita client is closed")
        if self._session is None:
            # Created on first use: a ClientSession must be made inside the running loop.
            connector = aiohttp.TCPConnector(limit=self._connection_limit, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session


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
