"""A real Prometheus scraping a real stack: every dashboard query and every rule has data.

The stack runs as `make up` runs it (`infra/local/stack.py up`), privately: free ports, its own
run directory, SQLite. `up` starts the local Prometheus from the same config file developers
get, scraping and evaluating every second. After a little traffic (live and shadow checkouts,
a decline, a replay, reads), each panel query of each Grafana dashboard, each template
variable and each recording rule must return data, no rule may fail to evaluate, and every
metric name anywhere in them must be one the services declare: a misspelled name fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.manifest import load

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "observability" / "grafana" / "dashboards"
STACK = [sys.executable, "infra/local/stack.py"]
API_KEYS = "demo-key:customer-demo,loadtest-key:customer-loadtest:loadtest"
#: What Grafana would put in place of its variables. 15 s spans 15 scrapes at 1 s.
VARIABLES = {"$__rate_interval": "15s", "$__interval": "5s", "$__range": "1m", "$service": ".*"}
DATA_TIMEOUT = 30.0
TRACE_ID = uuid.uuid4().hex
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


@dataclass
class Live:
    gateway: str
    prometheus: str


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACK, command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if shutil.which("prometheus") is None:
        pytest.fail(
            "prometheus is required: install it with scripts/system-packages.sh "
            "(Debian package `prometheus`)",
            pytrace=False,
        )
    services = load()
    *ports, prometheus_port = free_ports(len(services) + 1)
    port_of = dict(zip(services.names, ports, strict=True))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(tuple(s.prefix for s in services))
    }
    env.update({f"{s.prefix}_PORT": str(port_of[s.name]) for s in services})
    env.update(
        STACK_RUN_DIR=str(tmp_path_factory.mktemp("observability-stack")),
        PROMETHEUS_PORT=str(prometheus_port),
        PROMETHEUS_SCRAPE_INTERVAL="1s",
        STACK_PROMETHEUS="1",
        GATEWAY_API_KEYS=API_KEYS,
    )
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    try:
        started = run("up", env)
        assert started.returncode == 0, f"stack up failed:\n{started.stdout}\n{started.stderr}"
        assert f"prometheus {prometheus}" in started.stdout, started.stdout
        gateway = f"http://127.0.0.1:{port_of[services.gateway.name]}"
        yield Live(gateway=gateway, prometheus=prometheus)
    finally:
        stopped = run("down", env)
        assert stopped.returncode == 0, f"stack down failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert re.search(r"prometheus +stopped", stopped.stdout), stopped.stdout


def drive_traffic(gateway: str) -> None:
    """Reads, checkouts (confirmed, declined, replayed), shadow traffic, a 404."""
    traceparent = f"00-{TRACE_ID}-{uuid.uuid4().hex[:16]}-01"
    demo = {"Authorization": "Bearer demo-key", "traceparent": traceparent}
    shadow = {"Authorization": "Bearer loadtest-key", "X-Shadow-Traffic": "1"}
    with httpx.Client(base_url=gateway, timeout=15.0) as client:
        products = client.get("/api/products", params={"limit": 5}, headers=demo)
        assert products.status_code == 200, products.text
        sku = products.json()["items"][0]["sku"]
        assert client.get(f"/api/products/{sku}", headers=demo).status_code == 200
        assert client.get("/api/products/no-such-sku", headers=demo).status_code == 404
        for headers, expected in ((demo, 201), (shadow, 201)):
            key = {"Idempotency-Key": uuid.uuid4().hex}
            body = {"items": [{"sku": "mug-stoneware-350ml", "quantity": 1}]}
            for _ in range(2):  # the second is a replay
                answer = client.post("/api/orders", json=body, headers={**headers, **key})
                assert answer.status_code == expected, answer.text
        declined = {"items": [{"sku": "espresso-machine", "quantity": 1}]}
        answer = client.post(
            "/api/orders", json=declined, headers={**demo, "Idempotency-Key": uuid.uuid4().hex}
        )
        assert answer.status_code == 402, answer.text
        assert client.get("/api/products", headers=shadow).status_code == 200


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    assert "$" not in expr, f"unknown template variable in {expr}"
    return expr


def panel_queries() -> list[tuple[str, str]]:
    """(where, expr) for every target of every panel of every dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        panels = list(board["panels"])
        panels += [inner for row in board["panels"] for inner in row.get("panels", [])]
        for panel in panels:
            for target in panel.get("targets", []):
                where = f"{path.name}: {panel['title']} [{target['refId']}]"
                queries.append((where, substitute(target["expr"])))
        for variable in board["templating"]["list"]:
            # label_values(<selector>, label): the selector must match series.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, variable
            queries.append((f"{path.name}: variable {variable['name']}", match.group(1)))
    return queries


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def api(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, f"{path} {params}: {response.text}"
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def without_data(client: httpx.Client, queries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The queries that return nothing, retried until all return data or time is up.

    A series appears with the first scrape after its first event and a rate needs two
    samples, so a query may come up empty for a second or two after the traffic.
    """
    deadline = time.monotonic() + DATA_TIMEOUT
    pending = queries
    while True:
        pending = [q for q in pending if not api(client, "/api/v1/query", query=q[1])["result"]]
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(1.0)


def test_every_panel_and_rule_returns_data_from_a_real_prometheus(live: Live) -> None:
    drive_traffic(live.gateway)
    with httpx.Client(base_url=live.prometheus, timeout=10.0) as client:
        groups = api(client, "/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        recording = [r for r in rules if r["type"] == "recording"]
        alerting = [r for r in rules if r["type"] == "alerting"]
        assert len(recording) >= 20 and len(alerting) >= 7
        queries = panel_queries() + [(f"rule {r['name']}", r["name"]) for r in recording]

        missing = without_data(client, queries)
        assert not missing, "no data for:\n" + "\n".join(f"{w}: {e}" for w, e in missing)

        # Every rule evaluates without error (a bad expression shows up as health "err").
        groups = api(client, "/api/v1/rules")["groups"]
        broken = [
            f"{rule['name']}: {rule.get('lastError')}"
            for group in groups
            for rule in group["rules"]
            if rule["health"] != "ok"
        ]
        assert not broken, broken

        # Every name read anywhere is exported by a service (series, or at least declared with
        # HELP/TYPE, like a counter whose event has not happened) or recorded by a rule.
        exported = set(api(client, "/api/v1/label/__name__/values"))
        declared = set(api(client, "/api/v1/metadata"))
        recorded = {r["name"] for r in recording}
        read = {name for _, expr in queries for name in metric_names(expr)}
        read |= {name for rule in rules for name in metric_names(rule["query"])}
        unknown = {
            name
            for name in read - exported - recorded
            if re.sub(r"_(total|bucket|count|sum|created)$", "", name) not in declared
        }
        assert not unknown, f"names no service exports: {sorted(unknown)}"


@pytest.mark.parametrize(
    "query",
    [
        'http_server_request_duration_seconds_bucket{service="gateway"}',
        # The order service continued the gateway's trace: its business counters point at it.
        'servicekit_saga_outcomes_total{service="order", outcome="confirmed"}',
        'servicekit_idempotent_replays_total{service="order"}',
    ],
)
def test_exemplars_carry_the_trace_id_of_a_sampled_request(live: Live, query: str) -> None:
    drive_traffic(live.gateway)
    with httpx.Client(base_url=live.prometheus, timeout=10.0) as client:
        deadline = time.monotonic() + DATA_TIMEOUT
        found: set[str] = set()
        while TRACE_ID not in found and time.monotonic() < deadline:
            now = time.time()
            data = api(client, "/api/v1/query_exemplars", query=query, start=now - 300, end=now)
            found = {e["labels"].get("trace_id", "") for s in data for e in s["exemplars"]}
            time.sleep(0.5)
    assert TRACE_ID in found, found
