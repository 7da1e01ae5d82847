"""Shared test configuration; fixtures live in tests/plugins/ (one module per concern)."""

from __future__ import annotations

import asyncio

import pytest

from service.logging import configure_logging

pytest_plugins = (
    "tests.plugins.database",
    "tests.plugins.simulator",
    "tests.plugins.service",
    "tests.plugins.workers",
)


def pytest_configure(config: pytest.Config) -> None:
    # The service's own logging set-up, as in production (JSON lines through the standard
    # library), so tests can capture and inspect what the service logs (caplog).
    configure_logging("INFO", "json")
    # looptime asks the policy for the current loop even in sync tests; on Python 3.11 that
    # silently creates (and leaks) a new loop unless one was explicitly set. Setting None
    # makes the policy answer "no loop" instead.
    asyncio.set_event_loop(None)
