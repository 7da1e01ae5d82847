"""Readiness probes: does an instance's app answer on its port mappings (docs/lifecycle.md)?

- Which endpoints: the ports named by the instance's readiness config (`{"ports": [...],
  "path": "/"}`); by default every HTTP port mapping, or every TCP one when it has no HTTP
  port, once every port the instance asked for has one. A port to probe or asked for
  without an endpoint yet cannot pass: Novita may report `running` before (or without)
  saying where the ports answer.
- HTTP passes on any response that is not 5xx and not a gateway's error page (Novita's
  gateway answers 502 while nothing listens); redirects are not followed (an app that
  redirects is answering, and a redirect could point anywhere). TCP passes once a
  connection is accepted.
- Endpoint forms: `http(s)://...` as given (a bare host gets `https://`, as Novita's
  gateway serves TLS); TCP `host:port`, `[v6]:port`, optionally with a scheme.
- SSRF: every target host is resolved and checked with the notifier's rules
  (`service.notifications.ssrf`): private, loopback and link-local addresses are refused
  unless allowed (the built-in simulator's endpoints live on loopback); cloud metadata
  addresses always. The HTTP connector only connects to the checked addresses.
- Each probe has a timeout (DNS included); probes run concurrently under a limit, in an
  HTTP session opened for the batch and closed with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from service.errors import UnresolvableHostError, WebhookTargetRefusedError
from service.notifications.ssrf import (
    CheckedResolver,
    check_literal_host,
    parse_target,
    refusal_from,
    resolve_checked,
)

_BODY_SNIFF = 4096
# What gateways put on their error pages when they answer with a non-5xx status.
_GATEWAY_PAGE_MARKERS = ("bad gateway", "gateway timeout", "gateway time-out")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    port: int  # the container port
    kind: str  # "http" | "tcp"
    endpoint: str


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: ProbeTarget
    passed: bool
    detail: str  # e.g. "HTTP 200", "HTTP 502", "connection refused", "timeout"
    refused: bool = False  # the SSRF rules forbade the target: no connection was made

    def summary(self) -> dict[str, Any]:
        return {"port": self.target.port, "type": self.target.kind, "result": self.detail}


def probe_targets(
    port_mappings: Sequence[Mapping[str, Any]],
    readiness: Mapping[str, Any] | None,
    requested: Sequence[Mapping[str, Any]] = (),
) -> list[ProbeTarget] | None:
    """The endpoints to probe; `[]` when there is nothing to probe, `None` when a port the
    config names (or, without one, a port the instance asked for) has no endpoint yet."""
    mapped = {
        int(m["port"]): ProbeTarget(int(m["port"]), str(m.get("type") or "http"), m["endpoint"])
        for m in port_mappings
        if m.get("endpoint")
    }
    wanted = (readiness or {}).get("ports")
    if not wanted and any(int(p["port"]) not in mapped for p in requested):
        return None
    if wanted:
        if any(int(port) not in mapped for port in wanted):
            return None
        return [mapped[int(port)] for port in wanted]
    http = [t for t in mapped.values() if t.kind == "http"]
    return http or list(mapped.values())


def readiness_path(readiness: Mapping[str, Any] | None) -> str:
    path = str((readiness or {}).get("path") or "/")
    return path if path.startswith("/") else "/" + path


def http_url(endpoint: str, path: str) -> str:
    base = endpoint if "://" in endpoint else f"https://{endpoint}"
    return base.rstrip("/") + path


def tcp_address(endpoint: str) -> tuple[str, int]:
    """`host:port` of a TCP endpoint; ValueError if it has no port."""
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"no host:port in {endpoint!r}")
    return host.strip("[]"), int(port)


class Prober:
    def __init__(self, *, timeout: float, concurrency: int, allow_private: bool) -> None:
        self.timeout = timeout
        self.concurrency = concurrency
        self.allow_private = allow_private

    async def probe_many(
        self, jobs: Mapping[str, tuple[Sequence[ProbeTarget], str]]
    ) -> dict[str, list[ProbeResult]]:
        """Probe every instance's targets (`id → (targets, HTTP path)`) concurrently."""
        limit = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(allow_private=self.allow_private),
            use_dns_cache=False,
            limit=self.concurrency,
            force_close=True,  # a probe is one request; idle connections would pile up
        )
        # No proxies from the environment: they would connect past the checked addresses.
        async with aiohttp.ClientSession(
            connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:

            async def one(target: ProbeTarget, path: str) -> ProbeResult:
                async with limit:
                    return await self._probe(session, target, path)

            keys = list(jobs)
            gathered = await asyncio.gather(
                *(
                    asyncio.gather(*(one(target, jobs[key][1]) for target in jobs[key][0]))
                    for key in keys
                )
            )
        return {key: list(results) for key, results in zip(keys, gathered, strict=True)}

    async def _probe(
        self, session: aiohttp.ClientSession, target: ProbeTarget, path: str
    ) -> ProbeResult:
        try:
            async with asyncio.timeout(self.timeout):
                if target.kind == "tcp":
                    return await self._tcp(target)
                return await self._http(session, target, path)
        except TimeoutError:
            return ProbeResult(target, False, "timeout")
        except UnresolvableHostError as exc:
            return ProbeResult(target, False, exc.reason)
        except WebhookTargetRefusedError as exc:
            return ProbeResult(target, False, f"refused: {exc.reason}", refused=True)
        except ValueError as exc:
            return ProbeResult(target, False, f"unusable endpoint: {exc}")

    async def _http(
        self, session: aiohttp.ClientSession, target: ProbeTarget, path: str
    ) -> ProbeResult:
        url = http_url(target.endpoint, path)
        host, _port = parse_target(url)
        check_literal_host(host, allow_private=self.allow_private)
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = await response.content.read(_BODY_SNIFF)
                status = response.status
                content_type = response.headers.get("Content-Type", "")
        except aiohttp.ClientError as exc:
            refusal = refusal_from(exc)
            if refusal is not None:
                raise refusal from None
            return ProbeResult(target, False, type(exc).__name__)
        except OSError as exc:
            return ProbeResult(target, False, type(exc).__name__)
        if status >= 500:
            return ProbeResult(target, False, f"HTTP {status}")
        if "html" in content_type and _is_gateway_page(body):
            return ProbeResult(target, False, f"HTTP {status} (gateway error page)")
        return ProbeResult(target, True, f"HTTP {status}")

    async def _tcp(self, target: ProbeTarget) -> ProbeResult:
        host, port = tcp_address(target.endpoint)
        resolved = await resolve_checked(host, port, allow_private=self.allow_private)
        try:
            _reader, writer = await asyncio.open_connection(resolved[0][2], port)
        except OSError as exc:
            return ProbeResult(target, False, exc.strerror or type(exc).__name__)
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # accepted is all we needed to know
        return ProbeResult(target, True, "connected")


def _is_gateway_page(body: bytes) -> bool:
    text = body.decode("utf-8", "replace").lower()
    return any(marker in text for marker in _GATEWAY_PAGE_MARKERS)
