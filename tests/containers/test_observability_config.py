"""Grafana provisioning and dashboards, the canary PromQL, and the generated files' freshness."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.manifest import parse

from .support import REPO, load_yaml, tool

GRAFANA = REPO / "observability" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def _datasource_uids(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and "uid" in source and not source["uid"].startswith("$"):
            found.add(source["uid"])
        for value in node.values():
            found |= _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= _datasource_uids(value)
    return found


def test_datasources_are_provisioned_with_exemplars_to_jaeger(compose: dict[str, Any]) -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")
    assert config["apiVersion"] == 1
    sources = {d["uid"]: d for d in config["datasources"]}
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    assert sources["jaeger"]["url"] == "http://jaeger:16686"
    destinations = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    # The services' exemplars carry `trace_id` (servicekit.metrics); the link opens Jaeger.
    assert destinations == [{"name": "trace_id", "datasourceUid": "jaeger"}]
    for host in ("prometheus", "jaeger"):
        assert host in compose["services"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboards_have_what_grafana_requires(path: Path) -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")
    known = {d["uid"] for d in config["datasources"]}
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert {"id", "type", "title", "gridPos"} <= set(panel), panel.get("title")
    assert _datasource_uids(dashboard) <= known


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(DASHBOARDS) == 5 and len(set(uids)) == len(uids)


def test_dashboard_provider_path_is_the_compose_mount(compose: dict[str, Any]) -> None:
    config = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./observability/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./observability/grafana/provisioning"] == "/etc/grafana/provisioning"
    grafana_env = compose["services"]["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_canary_queries_are_valid_promql(tmp_path: Path) -> None:
    spec = yaml.safe_load(
        (REPO / "observability" / "prometheus" / "canary-queries.yml").read_text()
    )
    values = {"service": "order", "canary": "v2", "stable": "v1", "window": spec["window"]}
    rules = [
        {
            "record": f"canary:{q['name'].replace('-', '_')}",
            "expr": string.Template(q["query"]).substitute(values),
        }
        for q in spec["queries"]
    ]
    (tmp_path / "canary.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "canary", "rules": rules}]})
    )
    done = subprocess.run(
        [tool("promtool"), "check", "rules", "canary.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_files_are_current() -> None:
    done = subprocess.run(
        [sys.executable, "infra/render.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_render_follows_a_new_manifest_entry(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "infra"))
    import render  # type: ignore[import-not-found]

    text = (REPO / "services.toml").read_text() + (
        '\n[[service]]\nname = "shipping"\npackage = "services/shipping"\nmodule = "shipping"\n'
        'port = 8004\nprefix = "SHIPPING"\ndatabase = true\nseed = "shipping.seed"\n'
        'downstreams = ["inventory"]\npublic = true\n'
    )
    manifest = parse(text, tmp_path / "services.toml")
    files = render.outputs(manifest)
    compose = yaml.safe_load(files[REPO / "docker-compose.yml"])
    assert compose["services"]["shipping"]["ports"] == ["127.0.0.1:8004:8004"]
    assert {"shipping-migrate", "shipping-seed"} <= set(compose["services"])
    assert (
        compose["services"]["shipping"]["environment"]["SHIPPING_INVENTORY_URL"]
        == "http://inventory:8002"
    )
    documents = list(yaml.safe_load_all(files[REPO / "infra/k8s/base/services/shipping.yaml"]))
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    assert len(policy["spec"]["ingress"][0]["from"]) == 1  # no caller yet: Prometheus only
    inventory = list(yaml.safe_load_all(files[REPO / "infra/k8s/base/services/inventory.yaml"]))
    callers = next(d for d in inventory if d["kind"] == "NetworkPolicy")["spec"]["ingress"][0][
        "from"
    ]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "shipping"}}} in callers
    assert 'CREATE DATABASE "shipping";' in files[render.POSTGRES_INIT]
    assert '"shipping:8004"' in files[render.PROMETHEUS_COMPOSE]


def test_check_names_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "services.toml"
    manifest.write_text((REPO / "services.toml").read_text().replace("port = 8003", "port = 8013"))
    monkeypatch.setenv("SERVICE_MANIFEST", str(manifest))
    done = subprocess.run(
        [sys.executable, "infra/render.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        "stale: docker-compose.yml" in done.stderr and "run: python infra/render.py" in done.stderr
    )
