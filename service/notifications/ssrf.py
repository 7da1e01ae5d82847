"""Which notification targets may be called (SSRF protection), checked twice.

At request time the API calls `check_webhook_target`; at delivery time the notifier's HTTP
connector resolves names through `CheckedResolver`, which applies the same rules to the
addresses it returns. aiohttp then connects to exactly those checked addresses (TLS still
verifies the certificate against the host name), so a DNS answer that changes between the
check and the connection cannot redirect a delivery: there is no rebinding window. Literal
IP hosts never reach a resolver, so `check_literal_host` covers them before each attempt.

Cloud metadata endpoints are refused even when private targets are allowed: no legitimate
receiver lives there, and reaching one leaks the machine's credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from service.errors import UnresolvableHostError, WebhookTargetRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud classic
    )
)
# IPv4 addresses embedded in IPv6 ones that a gateway translates (NAT64 well-known prefix).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_ALLOWED_SCHEMES = frozenset({"http", "https"})
CHECK_RESOLVE_TIMEOUT = 5.0  # seconds


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why `address` may not be a notification target, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None
        )
        if embedded is not None:
            return address_refusal(embedded, allow_private=allow_private)
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if allow_private:
        return None
    checks = (
        ("is_unspecified", "an unspecified"),
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_reserved", "a reserved"),
        ("is_private", "a private"),
    )
    for attribute, kind in checks:
        if getattr(address, attribute):
            return f"{address} is {kind} address"
    if not address.is_global:  # shared (CGNAT), documentation and other special ranges
        return f"{address} is not a public address"
    return None


def parse_target(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; refuse anything else."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise WebhookTargetRefusedError("not a valid URL") from None
    if parsed.scheme not in _ALLOWED_SCHEMES:
        raise WebhookTargetRefusedError("only http:// and https:// URLs are allowed")
    host, port = parsed.host, parsed.port
    if not host or port is None:
        raise WebhookTargetRefusedError("the URL has no host")
    return host, port


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_literal_host(host: str, *, allow_private: bool) -> None:
    """Refuse a literal IP host that is not allowed (names are checked by the resolver)."""
    address = _literal(host)
    if address is not None:
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            raise WebhookTargetRefusedError(reason, host=host)


async def resolve_checked(
    host: str, port: int, *, allow_private: bool, family: int = socket.AF_UNSPEC
) -> list[tuple[int, int, str]]:
    """Resolve `host` without blocking and check every address: `(family, proto, address)`.

    All addresses must pass: a name answering one public and one private address is refused,
    because the connection could use either.
    """
    literal = _literal(host)
    if literal is not None:
        check_literal_host(host, allow_private=allow_private)
        return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, 0, str(literal))]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHostError(f"the host does not resolve ({exc})", host=host) from None
    resolved: list[tuple[int, int, str]] = []
    for info_family, _type, proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            raise WebhookTargetRefusedError(f"{host} resolves to {reason}", host=host)
        resolved.append((int(info_family), proto, str(address)))
    if not resolved:
        raise UnresolvableHostError("the host does not resolve", host=host)
    return resolved


async def check_webhook_target(
    url: str, *, allow_private: bool, resolve_timeout: float = CHECK_RESOLVE_TIMEOUT
) -> None:
    """Raise `WebhookTargetRefusedError` (a `DomainError`: answer 422) unless `url` is allowed.

    A host that does not resolve (or not within `resolve_timeout` seconds, so a request
    never hangs on DNS) raises the subclass `UnresolvableHostError`.
    """
    host, port = parse_target(url)
    try:
        async with asyncio.timeout(resolve_timeout):
            await resolve_checked(host, port, allow_private=allow_private)
    except TimeoutError:
        raise UnresolvableHostError("the host did not resolve in time", host=host) from None


class RefusedAddressError(OSError):
    """Raised inside aiohttp's connector (which expects OSError) when a target is refused."""

    def __init__(self, refusal: WebhookTargetRefusedError) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that only ever returns addresses that passed the SSRF rules."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            resolved = await resolve_checked(
                host, port, allow_private=self._allow_private, family=family
            )
        except UnresolvableHostError as exc:  # a DNS failure: aiohttp reports it, retried
            raise OSError(exc.reason) from None
        except WebhookTargetRefusedError as refusal:
            raise RefusedAddressError(refusal) from None
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=family_, proto=proto, flags=flags
            )
            for family_, proto, address in resolved
        ]

    async def close(self) -> None:
        """Nothing to release: resolution uses the event loop's getaddrinfo."""


def refusal_from(exc: BaseException) -> WebhookTargetRefusedError | None:
    """The SSRF refusal behind an aiohttp connection error, if that is what it was."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, RefusedAddressError):
            return current.refusal
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
