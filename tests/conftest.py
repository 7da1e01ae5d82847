"""Shared test configuration; fixtures live in tests/plugins/ (one module per concern)."""

from __future__ import annotations

import asyncio

import pytest

pytest_plugins = ("tests.plugins.database", "tests.plugins.simulator", "tests.plugins.service")


def pytest_configure(config: pytest.Config) -> None:
    # looptime asks the policy for the current loop even in sync tests; on Python 3.11 that
    # silently creates (and leaks) a new loop unless one was explicitly set. Setting None
    # makes the policy answer "no loop" instead.
    asyncio.set_event_loop(None)
