"""End-to-end fixtures: the whole stack started exactly as the README does (`make up`).

The stack runs once per mode for the whole tier (`test_stack` and `test_dyeing` share it; each
test leaves what it did behind, and none depends on another's leftovers):
- "sqlite": the embedded defaults, with each service's database in a temp dir so the developer's
  `.run/*.db` stay untouched;
- "postgres+redis": a fresh PostgreSQL database `e2e_<hex>` shared by the three services (their
  tables and version tables are distinct) and the real Redis; the database is dropped at the end.

`make down` always runs, even when start-up or a test fails, and is checked there: with one
service already dead (crashed, or killed by hand), it must stop every other process and free
every port. That check is the stack's teardown because it ends the stack the tests share.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from infra.manifest import load

REPO = Path(__file__).resolve().parents[2]
STACK_UP = ["make", "up"]
STACK_DOWN = ["make", "down"]
#: E2E_STACK_DIRECT=1 runs the script `make` runs, without `make install` (which syncs the venv):
#: for a machine whose venv is shared or already set up.
DIRECT = {
    "up": [".venv/bin/python", "infra/local/stack.py", "up"],
    "down": [".venv/bin/python", "infra/local/stack.py", "down"],
}
POSTGRES_ADMIN_URL = os.environ.get("E2E_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/0")
API_KEYS = "demo-key:customer-demo,other-key:customer-other,loadtest-key:customer-loadtest:loadtest"


def service_ports() -> dict[str, int]:
    """Every service of the manifest and the port `make up` puts it on (none is moved here)."""
    return {service.name: service.port for service in load()}


SERVICES = service_ports()


@dataclass
class Stack:
    mode: str
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{SERVICES[service]}"

    def client(self, key: str | None = "demo-key", service: str = "gateway") -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url(service), headers=headers, timeout=15.0)


def _command(name: str) -> list[str]:
    if os.environ.get("E2E_STACK_DIRECT") == "1":
        return DIRECT[name]
    return STACK_UP if name == "up" else STACK_DOWN


def run_stack(
    name: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `make up` / `make down` from the repo root; the output is kept for failure messages."""
    return subprocess.run(
        _command(name),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_pids() -> dict[str, int]:
    pids = {}
    for path in (REPO / ".run" / "pids").glob("*.pid"):
        pids[path.stem] = int(path.read_text().strip())
    return pids


def base_env() -> dict[str, str]:
    """This environment without any service's own settings, plus the test's API keys.

    The stack must not pick up a developer's own database, Redis or port settings.
    """
    manifest = load()
    foreign = tuple(f"{service.prefix}_" for service in manifest)
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env[f"{manifest.gateway.prefix}_API_KEYS"] = API_KEYS
    return env


def backend_env(database_url: str | None, redis_url: str | None = None) -> dict[str, str]:
    """Each service with a database on `database_url` (a `{name}` in it is the service's name),
    and every service on `redis_url`."""
    env: dict[str, str] = {}
    for service in load():
        if service.database and database_url:
            env[f"{service.prefix}_DATABASE_URL"] = database_url.format(name=service.name)
        if redis_url:
            env[f"{service.prefix}_REDIS_URL"] = redis_url
    return env


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres+redis"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    mode: str = request.param
    env = base_env()
    database = None
    if mode == "sqlite":
        directory = tmp_path_factory.mktemp("e2e-sqlite")
        env.update(backend_env(f"sqlite:///{directory}/{{name}}.db"))
    else:
        database = f"e2e_{secrets.token_hex(6)}"
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
        url = f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{database}"
        env.update(backend_env(url, REDIS_URL))
    up = False
    try:
        started = run_stack("up", env)
        if started.returncode != 0:
            pytest.fail(
                f"`{' '.join(_command('up'))}` failed ({mode}), exit "
                f"{started.returncode}:\n{started.stdout}\n{started.stderr}",
                pytrace=False,
            )
        up = True
        yield Stack(mode=mode, env=env, pids=read_pids())
    finally:
        # Only a stack that came up is checked: after a failed `up` a pid file may be stale,
        # and its number another process's. Read again: a restarted service has a new pid.
        pids = read_pids() if up else {}
        if "payment" in pids:
            os.kill(pids["payment"], signal.SIGKILL)  # down must cope with a dead service
        stopped = run_stack("down", env, timeout=60)
        if database is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        assert stopped.returncode == 0, f"make down failed:\n{stopped.stdout}\n{stopped.stderr}"
        running = [f"{name} (pid {pid})" for name, pid in pids.items() if _alive(pid)]
        assert not running, f"still running after make down: {running}"
        bound = [port for port in SERVICES.values() if _port_open(port)]
        assert not bound, f"ports still open after make down: {bound}"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    # A zombie (state Z) has exited; only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
