"""A whole lifecycle, with errors on the way, logs none of the secrets it handled; and no
format (console or JSON) shows a secret in any form, through bugs and bad requests."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.app import create_app
from service.db import repository as repo
from service.logging import build_formatter
from service.settings import decode_webhook_secret
from service.workers.notifier import Notifier
from tests.plugins.service import API_KEY, INBOUND_SECRET, WEBHOOK_SECRET, ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed
from tests.support.lifecycle import BODY, Workers
from tests.support.server import running_server
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


# -- every log format, every form of every secret, with real errors on the way ------------

NOVITA_CANARY = "nv_canary_novita_key_0123456789"
IMAGE_AUTH_CANARY = "imgauth_canary_4f1e9a7b2c"
ENV_CANARY = "env_canary_value_8d3b6e1f0a"


def canary_forms() -> dict[str, str]:
    """Each configured secret in every form a log line could show it in."""
    forms = {
        "api key": API_KEY,
        "bearer header": f"Bearer {API_KEY}",
        "novita key": NOVITA_CANARY,
        "instance env value": ENV_CANARY,
        "instance imageAuthId": IMAGE_AUTH_CANARY,
    }
    for name, secret in (("inbound", INBOUND_SECRET), ("outbound", WEBHOOK_SECRET)):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        forms[f"{name} secret"] = secret
        forms[f"{name} secret base64"] = secret.removeprefix("whsec_")
        forms[f"{name} secret decoded"] = key.decode("latin-1")
        forms[f"{name} secret decoded repr"] = repr(key)
        forms[f"{name} secret hex"] = key.hex()
    return forms


@contextlib.contextmanager
def captured_formats() -> Iterator[dict[str, io.StringIO]]:
    """What the service's own formatters write, in both formats, for everything logged."""
    outputs = {fmt: io.StringIO() for fmt in ("console", "json")}
    handlers = []
    for fmt, output in outputs.items():
        handler = logging.StreamHandler(output)
        handler.setFormatter(build_formatter(fmt))
        handlers.append(handler)
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield outputs
    finally:
        for handler in handlers:
            root.removeHandler(handler)


async def failing_route(request: Request) -> Response:
    """A bug with secrets in reach: its frame holds keys, decoded secrets and an instance
    (envs, imageAuthId) as locals, and its message carries a key and a decoded secret."""
    resources = request.state.resources
    api_key = resources.settings.api_key_values()[0]
    decoded = [
        decode_webhook_secret(secret.get_secret_value())
        for secret in resources.settings.inbound_webhook_secrets
    ]
    async with resources.database.read() as conn:
        instance = await repo.get_instance(conn, request.path_params["instance_id"])
    raise RuntimeError(f"a bug holding {api_key} and {decoded[0]!r} for {instance.id}")


@pytest.mark.service_settings(novita_api_key=NOVITA_CANARY)
async def test_no_secret_in_either_log_format_through_errors(service: ServiceUnderTest) -> None:
    body = {
        **BODY,
        "envs": [{"key": "HF_TOKEN", "value": ENV_CANARY}],
        "imageAuthId": IMAGE_AUTH_CANARY,
    }
    with captured_formats() as outputs:
        status, created, _ = await service.call("POST", "/api/instances", json=body)
        assert status == 202, created
        # The service's own app with one more route, a bug, beside the real ones.
        app = create_app(service.resources.settings, service.resources, run_workers=False)
        app.router.routes.append(Route("/bug/{instance_id}", failing_route))
        async with running_server(app) as base_url:
            for _ in range(2):
                async with service.http.get(
                    f"{base_url}/bug/{created['id']}", headers=service.auth
                ) as response:
                    assert response.status == 500
        # Unauthenticated webhooks, each wrong in another way, and unauthenticated calls.
        raw, headers = signed(service, event())
        for tamper in (
            {"webhook-signature": "v1,AAAA"},
            {"webhook-signature": f"v1,{INBOUND_SECRET}"},
            {"webhook-timestamp": "²"},
            {"webhook-id": ""},
        ):
            status, _ = await post(service, raw, {**headers, **tamper})
            assert 400 <= status < 500
        raw, headers = signed(service, event(), secret=WEBHOOK_SECRET)
        assert (await post(service, raw, headers))[0] == 401
        await service.call("GET", "/api/instances", auth=False)
        await service.call("GET", "/api/instances", headers={"Authorization": "Bearer nope"})

    console, json_lines = outputs["console"].getvalue(), outputs["json"].getvalue()
    for output in (console, json_lines):
        assert "RuntimeError: a bug holding [redacted]" in output, "the bug was logged"
        assert output.count("Traceback (most recent call last)") >= 2
    for fmt, output in (("console", console), ("json", json_lines)):
        for form, secret in canary_forms().items():
            assert secret not in output, f"{form} reached the {fmt} log"
