"""A whole lifecycle, with errors on the way, logs none of the secrets it handled."""

from __future__ import annotations

import logging

import pytest

from service.workers.notifier import Notifier
from tests.acceptance.test_inbound_webhooks import event, post, signed
from tests.acceptance.test_lifecycle_flow import BODY, Workers
from tests.plugins.service import API_KEY, INBOUND_SECRET, WEBHOOK_SECRET, ServiceUnderTest
from tests.support.webhook_receiver import running_receiver

ENV_SECRET = "hf_env_value_that_must_never_be_logged"


@pytest.mark.service_settings(allow_private_webhook_targets=True)
async def test_full_lifecycle_logs_no_secret(
    service: ServiceUnderTest, sim_api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    workers = Workers(service)
    async with running_receiver(WEBHOOK_SECRET, service.clock) as receiver:
        receiver.plan("/hook", 500)  # one failed delivery, logged
        body = {
            **BODY,
            "webhookUrl": receiver.url("/hook"),
            "envs": [{"key": "HF_TOKEN", "value": ENV_SECRET}],
        }
        _, created, _ = await service.call("POST", "/api/instances", json=body)
        await workers.provisioner.run_once()
        await workers.settle()
        await service.call("POST", f"/api/instances/{created['id']}/stop")
        await workers.settle()
        raw, headers = signed(service, event())
        await post(service, raw, headers)
        headers["webhook-signature"] = "v1,AAAA"  # a rejected webhook, logged
        await post(service, raw, headers)
        await service.call("GET", "/api/instances", auth=False)  # a 401
        service.simulator.faults.error_rate = 1.0  # Novita errors, logged
        await service.call("POST", f"/api/instances/{created['id']}/start")
        service.simulator.faults.error_rate = 0.0
        r = service.resources
        async with Notifier(
            database=r.database, settings=r.settings, clock=r.clock, owner="n"
        ) as notifier:
            for _ in range(3):
                await notifier.run_once()
                service.clock.advance(10)
        await workers.applier.run_once()
        await service.call("DELETE", f"/api/instances/{created['id']}")
        await workers.settle(seconds=30)

    logged = caplog.text + "".join(repr(record.msg) for record in caplog.records)
    assert len(caplog.records) > 20, "the lifecycle was logged"
    for secret in (
        API_KEY,
        sim_api_key,
        INBOUND_SECRET,
        WEBHOOK_SECRET,
        ENV_SECRET,
        f"Bearer {API_KEY}",
        WEBHOOK_SECRET.removeprefix("whsec_"),
    ):
        assert secret not in logged, f"a secret reached the logs: {secret[:6]}…"
