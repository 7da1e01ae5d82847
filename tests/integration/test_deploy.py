"""deploy/: the alerting rules pass promtool's checks and unit tests, and every metric the
rules and the Grafana dashboard query is one the running service really exports.

promtool (Debian's `prometheus` package; `.ci/run` installs it) is required under
CI=true; locally the promtool cases are skipped when it is absent.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from service.app import create_app
from service.settings import load_settings
from tests.support.metrics import promtool as _promtool
from tests.support.server import running_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "novita-lifecycle.rules.yml"
RULE_TESTS = sorted((DEPLOY / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "novita-lifecycle.json"

# PromQL words that are not metric names.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
# Series Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or an operator
        names.add(word)
    return names


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_metric_names_are_found_in_expressions() -> None:
    assert metric_names('sum by (le, route) (rate(a_total{x="y(z)"}[5m])) or vector(0)') == {
        "a_total"
    }
    assert metric_names("x == 1 or max without (instance) (y) == 0") == {"x", "y"}


def test_promtool_accepts_the_rules() -> None:
    run = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    run = subprocess.run(
        [_promtool(), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=test_file.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {name for name, _ in rule_expressions()} <= tested


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_every_queried_metric_is_exported_by_the_service(tmp_path: Path) -> None:
    """The service with its workers and the built-in simulator, over loopback: its
    /metrics must name every metric the rules and the dashboard read."""
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/metrics.db",
        novita_simulator=True,
        api_keys="deploy-test-key",
    )
    queried = {
        (where, name)
        for where, expr in [*rule_expressions(), *dashboard_expressions()]
        for name in metric_names(expr)
    }
    assert queried, "no metric names found in the rules and dashboard"
    app = create_app(settings, migrate=True)
    async with running_server(app) as base_url, aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/health") as response:  # one request counted
            assert response.status == 200
        # Some figures exist only once a worker has run (the relister's first sweep ends a
        # few milliseconds after startup): scrape until they are there, bounded.
        async with asyncio.timeout(10):
            while True:
                async with http.get(f"{base_url}/metrics") as response:
                    assert response.status == 200
                    exported = exported_names(await response.text())
                missing = sorted(
                    (where, name)
                    for where, name in queried
                    if name not in exported | PROMETHEUS_OWN
                )
                if not missing:
                    break
                await asyncio.sleep(0.05)
    assert not missing, f"queried but not exported by /metrics: {missing}"
