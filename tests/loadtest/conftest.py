"""Load-test tier: `make loadtest` run as a user runs it, against a private `make up` stack.

The stack is the one `make up` starts, with its development defaults (so the loadtest key pool
of the gateway's development keys is what the runs use), on free ports and in a temp
`STACK_RUN_DIR`, so it never meets the developer's stack or the ports 8000-8003; Prometheus is
not started. Reports go to a temp folder (`LOADTEST_REPORTS_DIR`). `make down` always runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.manifest import load

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The caller's environment without any service or load-test setting of its own."""
    prefixes = (*(f"{s.prefix}_" for s in load().services), "LOADTEST_", "SLO_")
    knobs = {
        "SCENARIO",
        "MIX",
        "USERS",
        "SPAWN_RATE",
        "DURATION",
        "HOST",
        "WORKERS",
        "DYE",
        "STACK_RUN_DIR",
    }
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in knobs}


@dataclass
class LocalStack:
    env: dict[str, str]
    gateway_port: int


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = clean_env()
    env.update(
        {
            "STACK_RUN_DIR": str(tmp_path_factory.mktemp("loadtest-stack")),
            "STACK_PROMETHEUS": "0",
            "OTEL_TRACES_SAMPLER": "always_off",
        }
    )
    for service in load().services:
        env[f"{service.prefix}_PORT"] = str(free_port())
    try:
        started = make("up", env=env, timeout=300)
        if started.returncode != 0:
            pytest.fail(f"make up failed:\n{started.stdout}\n{started.stderr}", pytrace=False)
        yield LocalStack(env=env, gateway_port=int(env["GATEWAY_PORT"]))
    finally:
        stopped = make("down", env=env, timeout=60)
        assert stopped.returncode == 0, f"make down failed:\n{stopped.stdout}\n{stopped.stderr}"


def make(
    target: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
