"""/metrics in Prometheus format and /health's readiness details, over real HTTP."""

from __future__ import annotations

import contextlib

from service.novita.errors import NovitaError
from tests.plugins.service import API_KEY, INBOUND_SECRET, WEBHOOK_SECRET, ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed
from tests.support.lifecycle import BODY
from tests.support.metrics import scrape
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
