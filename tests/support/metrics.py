"""Scraping /metrics, and promtool."""

from __future__ import annotations

import os
import shutil

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.service import API_KEY, INBOUND_SECRET, WEBHOOK_SECRET, ServiceUnderTest


def promtool() -> str:
    """promtool's path (Debian's `prometheus` package; `.ci/run` installs it): required under
    CI=true; locally a test that needs it is skipped when it is absent."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message + "; it is required when CI=true")
        pytest.skip(message)
    return path


async def scrape_text(service: ServiceUnderTest) -> str:
    """The /metrics page as served (checked: text, no secret in it)."""
    async with aiohttp.ClientSession() as http, http.get(f"{service.base_url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    for secret in (API_KEY, INBOUND_SECRET, WEBHOOK_SECRET):
        assert secret not in text
    return text


async def scrape(service: ServiceUnderTest) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await scrape_text(service)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
