"""Shared test configuration; fixtures live in tests/plugins/ (one module per concern)."""

pytest_plugins = ("tests.plugins.database", "tests.plugins.simulator")
