"""A stack started from a throwaway manifest with one more service: `stack.py up` starts it
(in start order, before the order service that calls it), points its caller at it, reports it
in `status`, and `down` stops it. A private stack: free ports, its own run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.manifest import load
from tests.architecture import extra_service as extra
from tests.chaos.servers import free_port

from .conftest import base_env

REPO = Path(__file__).resolve().parents[2]


def stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "infra/local/stack.py", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def ledger_stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    manifest, source = extra.write(tmp_path)
    services = load(manifest)
    ports = {name: free_port() for name in services.names}
    env = {
        **base_env(),
        "SERVICE_MANIFEST": str(manifest),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
        "STACK_RUN_DIR": str(tmp_path / "run"),
        "STACK_PROMETHEUS": "0",
        **{f"{s.prefix}_PORT": str(ports[s.name]) for s in services},
    }
    started = stack("up", env)
    try:
        assert started.returncode == 0, f"up failed:\n{started.stdout}\n{started.stderr}"
        yield env, ports
    finally:
        stopped = stack("down", env)
        assert stopped.returncode == 0, f"down failed:\n{stopped.stdout}\n{stopped.stderr}"


def test_the_extra_service_runs_and_its_caller_is_pointed_at_it(
    ledger_stack: tuple[dict[str, str], dict[str, int]],
) -> None:
    env, ports = ledger_stack
    ledger = f"http://127.0.0.1:{ports[extra.NAME]}"
    assert httpx.get(f"{ledger}/readyz", timeout=5).status_code == 200
    # The real servicekit edge: an internal service refuses a caller without the credential.
    assert httpx.get(f"{ledger}/entries", timeout=5).status_code == 401
    status = stack("status", env)
    assert status.returncode == 0, status.stdout
    assert any(line.split()[:1] == [extra.NAME] for line in status.stdout.splitlines())
    run = Path(env["STACK_RUN_DIR"])
    order_pid = int((run / "pids" / "order.pid").read_text())
    environ = Path(f"/proc/{order_pid}/environ").read_bytes().split(b"\0")
    assert f"ORDER_LEDGER_URL={ledger}".encode() in environ
