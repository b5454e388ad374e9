"""promtool on the Prometheus configs and rules; static checks of the Grafana files.

`promtool test rules` runs the unit tests in observability/prometheus/rules/tests: every alert
has at least one case where it fires and one where it stays silent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from servicekit import Metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "observability" / "prometheus"
RULES = PROMETHEUS_DIR / "rules"
GRAFANA = REPO / "observability" / "grafana"
INSTALL = "install it with scripts/system-packages.sh (Debian package `prometheus`)"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(f"promtool is required and not on PATH: {INSTALL}", pytrace=False)
    done = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.parametrize("config", ["prometheus.local.yml", "prometheus.compose.yml"])
def test_config_is_valid_and_loads_both_rule_files(config: str) -> None:
    output = promtool("check", "config", config)
    assert "2 rule files found" in output


def test_rules_are_valid() -> None:
    output = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert output.count("SUCCESS") == 2


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p.relative_to(RULES)) for p in (RULES / "tests").glob("*.yml"))
    assert tests
    output = promtool("test", "rules", *tests, cwd=RULES)
    assert output.count("SUCCESS") == len(tests)


def test_every_alert_has_a_firing_and_a_silent_test_case() -> None:
    alerts = re.findall(r"(?m)^\s*- alert: (\S+)", (RULES / "alerts.yml").read_text())
    assert len(alerts) >= 7 and len(set(alerts)) == len(alerts)
    firing: set[str] = set()
    silent: set[str] = set()
    for path in (RULES / "tests").glob("*.yml"):
        # One case per `- alertname:` block; it fires when it expects labels.
        for case in re.split(r"(?m)^\s*- alertname: ", path.read_text())[1:]:
            name, _, body = case.partition("\n")
            body = body.split("- interval:")[0]  # where the next test group starts
            (firing if "exp_labels" in body else silent).add(name.strip())
    assert set(alerts) <= firing, f"alerts never shown firing: {set(alerts) - firing}"
    assert set(alerts) <= silent, f"alerts never shown silent: {set(alerts) - silent}"


def dashboards() -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))]


def test_dashboards_use_the_provisioned_prometheus_and_have_unique_ids() -> None:
    provisioned = (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    assert "uid: prometheus" in provisioned and "uid: jaeger" in provisioned
    boards = dashboards()
    assert len(boards) == 5
    assert len({b["uid"] for b in boards}) == 5
    for board in boards:
        panels = [p for p in board["panels"] if p["type"] not in ("row", "text")]  # type: ignore[attr-defined]
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])  # type: ignore[arg-type]
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel


def test_every_metric_the_services_export_is_on_a_dashboard() -> None:
    exprs = " ".join(
        target["expr"]
        for board in dashboards()
        for panel in board["panels"]  # type: ignore[attr-defined]
        for target in panel.get("targets", [])
    )
    families = {family.name for family in Metrics("any").registry.collect()}
    unused = {name for name in families if not re.search(rf"\b{name}(_\w+)?\b", exprs)}
    assert not unused, f"exported but on no dashboard: {sorted(unused)}"
