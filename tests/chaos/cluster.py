"""A private stack: `infra/local/stack.py up/down` on free ports and a temp run dir,
plus what a chaos test does to it: kill a service, restart it, read its pid, RSS and metrics.

A restart replays the killed process exactly: its command line, environment and working
directory are read from /proc before the kill, so it starts the way `stack.py` started it,
with no second copy of that command here to drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.manifest import Manifest, load

from .servers import HOST, free_port

REPO = Path(__file__).resolve().parents[2]
#: The customers of the private stack; each test picks keys from here.
API_KEYS = {f"chaos-key-{n}": f"customer-{n}" for n in range(1, 9)}
ADMIN_TOKEN = "chaos-admin-token"


@dataclass(frozen=True)
class Launch:
    """How a service process was started: enough to start it again identically."""

    argv: list[str]
    env: dict[str, str]
    cwd: str


def _read_launch(pid: int) -> Launch:
    proc = Path(f"/proc/{pid}")
    argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        entry.decode().split("=", 1)
        for entry in (proc / "environ").read_bytes().split(b"\0")
        if b"=" in entry
    )
    return Launch(argv, env, os.readlink(proc / "cwd"))


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise KeyError(name)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll `check` until true; returns the seconds it took, fails the test after `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Stack:
    """One private stack; `up()` before use, `down()` always."""

    run_dir: Path
    env: dict[str, str]
    #: What `stack.py` reads too (SERVICE_MANIFEST, when set, is passed on in `env`).
    manifest: Manifest = field(default_factory=load)
    #: A free port per service, filled in from the manifest unless given.
    ports: dict[str, int] = field(default_factory=dict)
    launches: dict[str, Launch] = field(default_factory=dict)
    #: Processes this test started (restarts), kept to reap them.
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Set by the invariant check; the fixture fails a test that never ran it.
    checked: bool = False

    def __post_init__(self) -> None:
        self.env = {**self.env, "STACK_RUN_DIR": str(self.run_dir)}
        self.ports = self.ports or {s: free_port() for s in self.services}
        for service, port in self.ports.items():
            self.env[f"{self.manifest.get(service).prefix}_PORT"] = str(port)

    @property
    def services(self) -> tuple[str, ...]:
        """Every service the stack runs, in start order."""
        return self.manifest.names

    # --- lifecycle ----------------------------------------------------------------------------

    def _stack(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "infra/local/stack.py", command],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> None:
        done = self._stack("up", timeout=300)
        if done.returncode != 0:
            output = f"{done.stdout}{done.stderr}"
            raise RuntimeError(f"stack.py up failed ({done.returncode}):\n{output}")
        # Kept now, while every process is alive: any of them can be started again later.
        self.launches = {s: _read_launch(self.pid(s)) for s in self.services}

    def down(self) -> None:
        done = self._stack("down", timeout=60)
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"stack.py down failed:\n{done.stdout}{done.stderr}")

    # --- processes ----------------------------------------------------------------------------

    def url(self, service: str) -> str:
        return f"http://{HOST}:{self.ports[service]}"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / "pids" / f"{service}.pid"

    def pid(self, service: str) -> int:
        return int(self.pid_file(service).read_text().strip())

    def is_alive(self, service: str) -> bool:
        """The recorded pid is a live (not zombie) server (servicekit.serve) of this service."""
        proc = Path(f"/proc/{self.pid(service)}")
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return (
            state != "Z"
            and "servicekit.serve" in cmdline
            and self.manifest.get(service).app in cmdline
        )

    def rss_bytes(self, service: str) -> int:
        return _status_field(self.pid(service), "VmRSS") * 1024

    def threads(self, service: str) -> int:
        return _status_field(self.pid(service), "Threads")

    def processes(self, service: str) -> int:
        """Processes in the service's group (it runs in a session of its own)."""
        pgid = self.pid(service)
        count = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                count += fields[0] != "Z" and int(fields[2]) == pgid
        return count

    def kill(self, service: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the service's process group and wait until it is gone."""
        os.killpg(self.pid(service), sig)
        deadline = time.monotonic() + 10
        while self.is_alive(service):
            assert time.monotonic() < deadline, f"{service} survived {sig.name}"
            time.sleep(0.02)

    async def restart(self, service: str, ready_timeout: float = 60.0) -> float:
        """Start a killed service again as it was started; returns seconds until ready."""
        launch = self.launches[service]
        log = self.run_dir / "logs" / f"{service}.log"
        with log.open("ab") as out:
            child = subprocess.Popen(
                launch.argv,
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children.append(child)
        self.pid_file(service).write_text(f"{child.pid}\n")

        async def ready() -> bool:
            assert child.poll() is None, f"{service} exited with {child.returncode} on restart"
            return await self.ready(service)

        return await wait_until(ready, ready_timeout, f"{service} ready after restart")

    # --- HTTP ---------------------------------------------------------------------------------

    async def ready(self, service: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                return (await client.get(f"{self.url(service)}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def metrics(self, service: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(f"{self.url(service)}/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    async def metric(self, service: str, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return math.fsum(
            value
            for (sample, sample_labels), value in (await self.metrics(service)).items()
            if sample == name and wanted <= sample_labels
        )

    def log_lines(self, service: str) -> list[str]:
        path = self.run_dir / "logs" / f"{service}.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def log_marks(self) -> dict[str, int]:
        """Each service's log length now, for a digest of what comes after."""
        return {s: len(self.log_lines(s)) for s in self.services}

    def log_digest(self, service: str, since: int = 0, top: int = 8) -> str:
        """The service's warnings and errors, counted by message, and any traceback's tail."""
        counts: Counter[str] = Counter()
        lines = self.log_lines(service)[since:]
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") not in ("debug", "info"):
                message = re.sub(r"[0-9a-f-]{32,36}", "<id>", str(entry.get("message")))
                counts[f"{entry.get('level')}: {message[:160]}"] += 1
        shown = [f"  {n:>5} x {message}" for message, n in counts.most_common(top)]
        loose = [line for line in lines if not line.startswith("{")]
        return "\n".join([f"--- {service}: {len(lines)} log lines", *shown, *loose[-6:]])


def stack_env(
    database_url: str, redis_url: str, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a private stack: private servers, short timers, and `overrides`.

    Every `<SERVICE>_*` variable of the caller's environment is dropped first, so a developer's
    own settings never leak in. Timers are short so a scenario settles in seconds: recovery
    every second, a saga is stale after 2 s, expired holds swept every second.
    """
    manifest = load()
    keys = API_KEYS.items()
    foreign = tuple(f"{s.prefix}_" for s in manifest)
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.pop("STACK_RUN_DIR", None)
    env.update(
        {
            f"{manifest.gateway.prefix}_API_KEYS": ",".join(f"{k}:{c}" for k, c in keys),
            f"{manifest.gateway.prefix}_ADMIN_TOKEN": ADMIN_TOKEN,
            "ORDER_SAGA_RECOVERY_INTERVAL_SECONDS": "1",
            "ORDER_SAGA_STALE_SECONDS": "2",
            "ORDER_RESERVATION_TTL_SECONDS": "60",
            "INVENTORY_RESERVATION_SWEEP_SECONDS": "1",
            # Nothing exports traces in a chaos run; the JSONL span files would only cost CPU.
            "OTEL_TRACES_SAMPLER": "always_off",
            "STACK_READY_TIMEOUT": "90",
            # The faults here are for the breakers alone: no recovery agent restarts what a
            # scenario broke (the canary tier tests the agent).
            "RECOVERY": "0",
        }
    )
    for service in manifest:
        if service.database:
            env[f"{service.prefix}_DATABASE_URL"] = database_url
        env[f"{service.prefix}_REDIS_URL"] = redis_url
    env.update(overrides or {})
    return env
