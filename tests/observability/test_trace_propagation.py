"""One checkout sent with a `traceparent`: its trace id in the logs and spans of each service
it crosses.

A private stack (free ports, its own STACK_RUN_DIR) started the way `make up` starts it, so the
local trace files and JSON logs are the ones a developer reads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.manifest import load

REPO = Path(__file__).resolve().parents[2]
TRACE = "5c1d0e3f6a7b8c9d0e1f2a3b4c5d6e7f"
PARENT = "1a2b3c4d5e6f7a8b"
# The server spans one checkout must produce downstream of the gateway.
EXPECTED_SERVERS = {
    ("order", "POST /orders"),
    ("inventory", "POST /reservations"),
    ("inventory", "POST /reservations/{reservation_id}/commit"),
    ("payment", "POST /charges"),
}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    run_dir = tmp_path_factory.mktemp("trace-stack")
    services = load()
    ports = dict(zip(services.names, free_ports(len(services)), strict=True))
    foreign = (*(f"{s.prefix}_" for s in services), "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env["STACK_RUN_DIR"] = str(run_dir)
    for service in services:
        env[f"{service.prefix}_PORT"] = str(ports[service.name])
    command = [sys.executable, "infra/local/stack.py"]
    up = subprocess.run(
        [*command, "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"stack did not start:\n{up.stdout}\n{up.stderr}", pytrace=False)
        yield f"http://127.0.0.1:{ports[services.gateway.name]}", run_dir
    finally:
        down = subprocess.run(
            [*command, "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )
        assert down.returncode == 0, down.stdout


def checkout_services() -> set[str]:
    """The services a checkout crosses: the gateway, order, and everything order calls."""
    manifest = load()
    reached, todo = {manifest.gateway.name}, ["order"]
    while todo:
        name = todo.pop()
        reached.add(name)
        todo.extend(d for d in manifest.get(name).downstreams if d not in reached)
    return reached


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def diagnose(run_dir: Path, crossed: set[str], spans: list[dict[str, Any]]) -> str:
    """What each service wrote, for a failure message: its span count, its last span's end,
    and the last lines of its log."""
    found = {s["service"] for s in spans}
    report = [f"spans of this trace from {sorted(found)}; missing {sorted(crossed - found)}"]
    for service in sorted(crossed - found):
        written = lines(run_dir / "traces" / f"{service}.jsonl")
        last = written[-1].get("end_time_unix_nano") if written else None
        log = (run_dir / "logs" / f"{service}.log").read_text().splitlines()[-15:]
        report += [f"{service}: {len(written)} spans in its file, the last ending {last}", *log]
    return "\n".join(report)


def test_checkout_trace_id_is_in_the_logs_and_spans_of_every_service(
    stack: tuple[str, Path],
) -> None:
    gateway, run_dir = stack
    response = httpx.post(
        f"{gateway}/api/orders",
        headers={
            "Authorization": "Bearer demo-key",
            "Idempotency-Key": "trace-propagation-1",
            "traceparent": f"00-{TRACE}-{PARENT}-01",
        },
        json={"items": [{"sku": "mug-stoneware-350ml", "quantity": 1}]},
        timeout=30,
    )
    assert response.status_code == 201, response.text

    # Spans reach the files in batches (OTEL_BSP_SCHEDULE_DELAY=500 in local mode), each
    # service on its own schedule: a child can be written before its parent ends, and one
    # service's last span after another's. Wait for one connected tree with every server span.
    crossed = checkout_services()
    deadline = time.monotonic() + 15
    while True:
        spans = [
            s
            for service in crossed
            for s in lines(run_dir / "traces" / f"{service}.jsonl")
            if s["trace_id"] == TRACE
        ]
        ids = {s["span_id"] for s in spans}
        roots = [s for s in spans if s["parent_span_id"] not in ids]
        servers = {(s["service"], s["name"]) for s in spans if s["kind"] == "SERVER"}
        # The caller's span is the root's parent: until the gateway's own batch is written,
        # order's server span is a lone root too, and the tree is not complete yet.
        complete = (
            EXPECTED_SERVERS.issubset(servers)
            and len(roots) == 1
            and roots[0]["parent_span_id"] == PARENT
            and {s["service"] for s in spans} == crossed
        )
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {s["service"] for s in spans} == crossed, diagnose(run_dir, crossed, spans)

    # One connected tree under the caller's span: every parent is in the trace but the root's.
    assert len(roots) == 1, [(s["service"], s["name"], s["parent_span_id"]) for s in roots]
    root = roots[0]
    assert root["service"] == "gateway" and root["kind"] == "SERVER"
    assert root["parent_span_id"] == PARENT and root["name"] == "POST /api/orders"
    assert EXPECTED_SERVERS.issubset(servers), servers
    assert any(s["attributes"].get("db.system.name") for s in spans)  # database spans too

    for service in sorted(crossed):
        entries = [e for e in lines(run_dir / "logs" / f"{service}.log") if e.get("trace_id")]
        ours = [e for e in entries if e["trace_id"] == TRACE]
        assert ours, f"{service} logged nothing with the trace id"
        span_ids = {s["span_id"] for s in spans if s["service"] == service}
        assert all(e["span_id"] in span_ids for e in ours), service
        assert any(e["logger"] == "servicekit.access" for e in ours), service

    waterfall = subprocess.run(
        [
            sys.executable,
            "-m",
            "servicekit.telemetry.waterfall",
            TRACE[:12],
            "--dir",
            str(run_dir / "traces"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert waterfall.startswith(f"trace {TRACE}")
    assert "services: gateway, inventory, order, payment" in waterfall
