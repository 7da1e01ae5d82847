"""One delivery attempt: POST the signed body, turn whatever happens into a `DeliveryResult`.

Outcome rules (README: notifications): 2xx delivered; 410 gone (stop sending to that URL); any other
status, including 3xx (redirects are never followed: a redirect could point anywhere,
e.g. at an internal address), a timeout or a connection error is a failed attempt. A
target refused by the SSRF rules is a `refused` attempt, recorded like a failure.

Errors recorded here name the host, never the full URL (webhook URLs often embed tokens)
and never the signing key.
"""

from __future__ import annotations

import aiohttp

from service.clock import Clock
from service.errors import WebhookTargetRefusedError
from service.notifications.models import AttemptOutcome, DeliveryResult
from service.notifications.schedule import parse_retry_after
from service.notifications.signing import SigningKeys, delivery_headers
from service.notifications.ssrf import (
    CheckedResolver,
    check_literal_host,
    parse_target,
    refusal_from,
)

# Enough of a response body to let the connection be reused; the rest is not needed.
_RESPONSE_READ_LIMIT = 64 * 1024
_ERROR_LIMIT = 1000


def new_delivery_session(
    *, allow_private: bool, concurrency: int, per_host_concurrency: int
) -> aiohttp.ClientSession:
    """The notifier's own HTTP session (its creator closes it).

    No proxies from the environment (a proxy would connect to whatever the name resolves to
    there, bypassing the pinned addresses), no cookies carried between receivers, no DNS
    cache (every new connection is resolved and checked again).
    """
    connector = aiohttp.TCPConnector(
        resolver=CheckedResolver(allow_private=allow_private),
        use_dns_cache=False,
        limit=concurrency,
        limit_per_host=per_host_concurrency,
    )
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )


class Deliverer:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        timeout: float,
        allow_private: bool,
    ) -> None:
        self._session = session
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        self._allow_private = allow_private

    async def attempt(
        self, url: str, *, message_id: str, body: bytes, keys: SigningKeys
    ) -> DeliveryResult:
        started_at = self._clock.now()
        started = self._clock.monotonic()

        def result(
            outcome: AttemptOutcome,
            *,
            status_code: int | None = None,
            error: str | None = None,
            retry_after: float | None = None,
        ) -> DeliveryResult:
            return DeliveryResult(
                outcome=outcome,
                target_url=url,
                started_at=started_at,
                duration_ms=max(0, round((self._clock.monotonic() - started) * 1000)),
                status_code=status_code,
                error=error[:_ERROR_LIMIT] if error is not None else None,
                retry_after=retry_after,
            )

        try:
            host, _port = parse_target(url)
            check_literal_host(host, allow_private=self._allow_private)
        except WebhookTargetRefusedError as refusal:
            return result(AttemptOutcome.REFUSED, error=refusal.message)

        headers = delivery_headers(
            keys=keys, message_id=message_id, timestamp=int(started_at.timestamp()), body=body
        )
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as response:
                await response.content.read(_RESPONSE_READ_LIMIT)
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            return result(
                AttemptOutcome.FAILED,
                error=f"no response from {host} within {self._timeout_seconds:g} s",
            )
        except aiohttp.ClientError as exc:
            refused = refusal_from(exc)
            if refused is not None:
                return result(AttemptOutcome.REFUSED, error=refused.message)
            return result(AttemptOutcome.FAILED, error=f"{type(exc).__name__}: {exc}")
        except OSError as exc:  # e.g. a socket error raised outside aiohttp's wrapping
            return result(AttemptOutcome.FAILED, error=f"{type(exc).__name__}: {exc}")

        if 200 <= status < 300:
            return result(AttemptOutcome.DELIVERED, status_code=status)
        wait = parse_retry_after(retry_after, now=self._clock.now())
        if status == 410:
            return result(AttemptOutcome.GONE, status_code=status, error="HTTP 410 Gone")
        note = " (redirects are not followed)" if 300 <= status < 400 else ""
        return result(
            AttemptOutcome.FAILED,
            status_code=status,
            error=f"HTTP {status}{note}",
            retry_after=wait,
        )
