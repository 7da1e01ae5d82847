"""/metrics in Prometheus format and /health's readiness details, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib

from service.novita.errors import NovitaError
from service.workers.applier import InboxApplier
from tests.plugins.service import API_KEY, INBOUND_SECRET, WEBHOOK_SECRET, ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed
from tests.support.lifecycle import BODY
from tests.support.metrics import promtool, scrape, scrape_text
from tests.support.statements import sent_statements


async def test_metrics_count_requests_by_route_and_read_live_state(
    service: ServiceUnderTest,
) -> None:
    _, created, _ = await service.call("POST", "/api/instances", json=BODY)
    for _ in range(3):
        await service.call("GET", f"/api/instances/{created['id']}")
    await service.call("GET", "/api/instances/inst_missing")
    raw, headers = signed(service, event())
    await post(service, raw, headers)
    await post(service, raw, headers)
    await service.resources.figures.refresh()  # what the background reader does

    samples = await scrape(service)
    route = "/api/instances/{instance_id}"
    ok = (("method", "GET"), ("route", route), ("status", "200"))
    missing = (("method", "GET"), ("route", route), ("status", "404"))
    assert samples[("http_requests_total", ok)] == 3, "labelled by template, not by id"
    assert samples[("http_requests_total", missing)] == 1
    assert samples[("instances", (("status", "pending"),))] == 1
    assert samples[("notifications", (("status", "pending"),))] == 1
    assert samples[("webhooks_ingested_total", (("outcome", "stored"),))] == 1
    assert samples[("webhooks_ingested_total", (("outcome", "duplicate"),))] == 1
    assert samples[("webhooks_inbox_backlog", ())] == 1
    assert samples[("novita_breaker_state", ())] == 0
    assert ("http_request_duration_seconds_count", (("method", "GET"), ("route", route))) in samples


async def test_a_scrape_sends_nothing_to_the_database(service: ServiceUnderTest) -> None:
    """The database figures of /metrics are the background reading /health shows too."""
    await service.call("POST", "/api/instances", json=BODY)
    figures = service.resources.figures
    await figures.stop()  # no background reading during the scrape: only the scrape counts
    await figures.refresh()
    with sent_statements(service.resources.database) as sent:
        samples = await scrape(service)
    assert sent == []
    assert samples[("instances", (("status", "pending"),))] == 1
    assert samples[("database_up", ())] == 1


async def test_health_reports_backlogs_without_secrets_or_hosts(service: ServiceUnderTest) -> None:
    await service.call("POST", "/api/instances", json=BODY)
    service.clock.advance(90)
    await service.resources.figures.refresh()  # what the background reader does
    status, health, _ = await service.call("GET", "/health", auth=False)
    assert status == 200
    assert health["status"] == "ok"
    assert health["checks"]["outbox"]["pending"] == 1
    assert health["checks"]["outbox"]["oldestPendingAgeSeconds"] == 90
    assert health["checks"]["inbox"]["backlog"] == 0
    text = str(health)
    for secret in (API_KEY, INBOUND_SECRET, WEBHOOK_SECRET, "127.0.0.1", "sim-key"):
        assert secret not in text

    service.simulator.faults.error_rate = 1.0
    for _ in range(5):
        await service.call("POST", "/api/instances/inst_x/start")  # 404: no Novita call
    novita = service.resources.novita
    for _ in range(5):
        with contextlib.suppress(NovitaError):  # failing is the point: it opens the breaker
            await novita.list_clusters()
    status, degraded, _ = await service.call("GET", "/health", auth=False)
    assert status == 200 and degraded["status"] == "degraded"
    assert degraded["checks"]["novita"]["breaker"] == "open"


async def test_applier_lag_and_oldest_unapplied_webhook_are_exported(
    service: ServiceUnderTest,
) -> None:
    applier = InboxApplier.from_resources(service.resources)
    before = await scrape(service)
    assert before[("webhooks_apply_lag_seconds_count", ())] == 0
    assert before[("webhooks_oldest_unapplied_age_seconds", ())] == 0
    for _ in range(2):
        assert (await post(service, *signed(service, event())))[0] == 200
    service.clock.advance(0.2)
    await service.resources.figures.refresh()  # what the background reader does
    waiting = await scrape(service)
    assert waiting[("webhooks_inbox_backlog", ())] == 2
    assert waiting[("webhooks_oldest_unapplied_age_seconds", ())] == 0.2
    assert waiting[("webhooks_apply_lag_seconds_count", ())] == 0, "nothing applied yet"

    assert await applier.run_once() == 2
    await service.resources.figures.refresh()
    applied = await scrape(service)
    lag = "webhooks_apply_lag_seconds_bucket"
    assert applied[("webhooks_apply_lag_seconds_count", ())] == 2
    assert applied[("webhooks_apply_lag_seconds_sum", ())] == 0.4
    assert applied[(lag, (("le", "0.1"),))] == 0
    assert applied[(lag, (("le", "0.25"),))] == 2
    assert applied[(lag, (("le", "+Inf"),))] == 2
    assert applied[("webhooks_inbox_backlog", ())] == 0
    assert applied[("webhooks_oldest_unapplied_age_seconds", ())] == 0

    assert (await post(service, *signed(service, event())))[0] == 200
    service.clock.advance(3)
    await applier.run_once()
    later = await scrape(service)
    assert later[("webhooks_apply_lag_seconds_count", ())] == 3
    assert later[(lag, (("le", "2.5"),))] == 2
    assert later[(lag, (("le", "5.0"),))] == 3


async def test_promtool_accepts_the_metrics_page(service: ServiceUnderTest) -> None:
    await service.call("POST", "/api/instances", json=BODY)
    assert (await post(service, *signed(service, event())))[0] == 200
    await InboxApplier.from_resources(service.resources).run_once()
    await service.resources.figures.refresh()
    text = await scrape_text(service)
    assert "webhooks_apply_lag_seconds_bucket" in text
    checked = await asyncio.create_subprocess_exec(
        promtool(),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        said, _ = await checked.communicate(text.encode())
    assert checked.returncode == 0, said.decode()
