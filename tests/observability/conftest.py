"""The observability tier's one private stack, started the way `make up` starts it.

Free ports, its own run directory (STACK_RUN_DIR), SQLite, and the local Prometheus from the
config file developers get, scraping and evaluating every second. The trace files and JSON
logs under the run directory are the ones a developer reads. One stack serves the whole tier:
each test sends its own traffic and looks only for what it sent.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.manifest import load

REPO = Path(__file__).resolve().parents[2]
STACK = [sys.executable, "infra/local/stack.py"]
API_KEYS = "demo-key:customer-demo,loadtest-key:customer-loadtest:loadtest"


@dataclass
class Live:
    gateway: str
    prometheus: str
    run_dir: Path


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACK, command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="session")
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
    # Neither a developer's service settings nor their OpenTelemetry exporter: spans go to the
    # local trace files.
    foreign = (*(f"{s.prefix}_" for s in services), "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.update({f"{s.prefix}_PORT": str(port_of[s.name]) for s in services})
    run_dir = tmp_path_factory.mktemp("observability-stack")
    env.update(
        STACK_RUN_DIR=str(run_dir),
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
        yield Live(gateway=gateway, prometheus=prometheus, run_dir=run_dir)
    finally:
        stopped = run("down", env)
        assert stopped.returncode == 0, f"stack down failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert re.search(r"prometheus +stopped", stopped.stdout), stopped.stdout
