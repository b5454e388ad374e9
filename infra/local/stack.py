"""Local stack runner: every service of `services.toml` as a local process (stdlib only).

    python infra/local/stack.py up | down | status | plan [--json] | logs [service] [-n N]

The services, their default ports, start order (each after the services it calls), which
databases are migrated and seeded, and which `<PREFIX>_<DOWNSTREAM>_URL` each one gets all come
from the manifest (`infra/manifest.py`; SERVICE_MANIFEST points at another file). `plan` prints
what `up` would do without starting anything.

State lives in `.run/` at the repo root (STACK_RUN_DIR moves it, so a test can run a private
stack beside yours): `pids/<service>.pid`, `logs/<service>.log`, `traces/<service>.jsonl`
(spans, printed by `make trace`) and the default SQLite files.
Configuration is the environment, passed through to every service, so
`ORDER_DATABASE_URL=postgresql://...` or `INVENTORY_REDIS_URL=redis://...` switch backends.
Ports: `<PREFIX>_PORT` moves a service off its manifest port; the downstream URLs follow.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import instances
import recovery
from prometheus_local import LocalPrometheus

REPO = Path(__file__).resolve().parents[2]
# The manifest reader is stdlib-only like this script, which runs before any venv is set up
# (`make down` falls back to the system python3).
sys.path.insert(0, str(REPO))
from infra import manifest  # noqa: E402

RUN = Path(os.environ.get("STACK_RUN_DIR") or REPO / ".run").resolve()
PIDS = RUN / "pids"
LOGS = RUN / "logs"
TRACES = RUN / "traces"
HOST = "127.0.0.1"
READY_TIMEOUT = float(os.environ.get("STACK_READY_TIMEOUT", "60"))
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Service:
    """A manifest entry placed in this run: its real port, URL, database and files."""

    entry: manifest.Service

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def prefix(self) -> str:
        return self.entry.prefix

    @property
    def default_port(self) -> int:
        return self.entry.port

    @property
    def port(self) -> int:
        return int(os.environ.get(f"{self.prefix}_PORT", self.default_port))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def database_url(self) -> str:
        default = f"sqlite:///{RUN / self.name}.db"
        return os.environ.get(f"{self.prefix}_DATABASE_URL", default)

    @property
    def pid_file(self) -> Path:
        return PIDS / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOGS / f"{self.name}.log"


def services(path: Path | str | None = None) -> tuple[Service, ...]:
    """Every service of the manifest, in start order (`manifest.ManifestError` if malformed)."""
    return tuple(Service(entry) for entry in manifest.load(path))


def shown(path: Path) -> str:
    """A path as the user should read it: relative to the repo when it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def say(message: str) -> None:
    print(message, flush=True)


# --- processes ------------------------------------------------------------------------------


def read_pid(service: Service) -> int | None:
    try:
        return int(service.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_ours(pid: int, service: Service) -> bool:
    """Alive, not a zombie, and still our server (a recycled pid is someone else's)."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False
    return state != "Z" and "servicekit.serve" in cmdline and service.entry.app in cmdline


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option uvicorn binds with, so a TIME_WAIT leftover does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def is_ready(service: Service) -> bool:
    try:
        with urllib.request.urlopen(f"{service.url}/readyz", timeout=1.0) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tail(path: Path, lines: int, since: int = 0) -> list[str]:
    """The last `lines` lines of `path`, only from byte offset `since` on."""
    try:
        with path.open("rb") as handle:
            handle.seek(since)
            return [b.decode(errors="replace") for b in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []


def stop(services: tuple[Service, ...] | list[Service]) -> None:
    """SIGTERM each recorded process group, wait up to 10 s, then SIGKILL; remove pid files."""
    running: dict[Service, int] = {}
    for service in services:
        pid = read_pid(service)
        if pid is not None and is_ours(pid, service):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)  # started with its own session: pgid == pid
            running[service] = pid
            say(f"  {service.name:<10} stopping (pid {pid})")
        elif pid is not None:
            say(f"  {service.name:<10} pid {pid} already gone")
    deadline = time.monotonic() + STOP_TIMEOUT
    while running and time.monotonic() < deadline:
        running = {s: p for s, p in running.items() if is_ours(p, s)}
        time.sleep(0.1)
    for service, pid in running.items():
        say(f"  {service.name:<10} did not stop in {STOP_TIMEOUT:.0f}s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for service in services:
        service.pid_file.unlink(missing_ok=True)


def wait_ports_free(services: tuple[Service, ...], timeout: float = 5.0) -> list[Service]:
    deadline = time.monotonic() + timeout
    busy = [s for s in services if port_in_use(s.port)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.2)
        busy = [s for s in busy if port_in_use(s.port)]
    return busy


# --- up -----------------------------------------------------------------------------------------


def downstream_urls(services: tuple[Service, ...]) -> dict[str, str]:
    """`<PREFIX>_<DOWNSTREAM>_URL` of every caller, at the port its downstream really uses."""
    by_name = {s.name: s for s in services}
    return {
        service.entry.url_setting(name): by_name[name].url
        for service in services
        for name in service.entry.downstreams
    }


def child_env(services: tuple[Service, ...]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for service in services:
        env[f"{service.prefix}_PORT"] = str(service.port)
    # Downstreams follow the ports; an explicitly set URL wins.
    for setting, url in downstream_urls(services).items():
        env.setdefault(setting, url)
    # The gateway fronts the public services (gateway.public serves those without routes of
    # their own, at the URL above).
    gateway = next(s for s in services if s.entry.gateway)
    public = ",".join(s.name for s in services if s.entry.public)
    env.setdefault(f"{gateway.prefix}_PUBLIC_SERVICES", public)
    # Traces without a backend: each service appends its spans to .run/traces/<service>.jsonl
    # (`make trace` prints one). Locally every request is traced, and spans reach the file
    # within half a second; the standard OTEL_* variables, when set, win.
    for service in services:
        env.setdefault(f"{service.prefix}_TRACES_FILE", str(TRACES / f"{service.name}.jsonl"))
        # Every access line too (deployed services log errors, slow and sampled requests).
        env.setdefault(f"{service.prefix}_ACCESS_LOG_SAMPLE", "1.0")
        # Canary routes every process follows (`make canary`, /admin/canary/{service}).
        env.setdefault(f"{service.prefix}_ROUTING_FILE", str(RUN / "routing.json"))
        if service.entry.database:
            # The database that was migrated (under STACK_RUN_DIR too), not the app's default.
            env[f"{service.prefix}_DATABASE_URL"] = service.database_url
    if "OTEL_TRACES_SAMPLER" not in env and "OTEL_TRACES_SAMPLER_ARG" not in env:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "500")
    return env


def setup_steps(service: Service) -> list[tuple[str, list[str]]]:
    """What runs before `service` starts: its migrations, then its seed (python arguments)."""
    if not service.entry.database:
        return []
    url = service.database_url
    steps = [
        (f"{service.name}: migrations", ["-m", "servicekit.data.migrations", service.name, url])
    ]
    if service.entry.seed:
        steps.append((f"{service.name}: seed", ["-m", service.entry.seed, url]))
    return steps


def command(service: Service) -> list[str]:
    """The command line that runs `service`: uvicorn with the kit's connection limits.

    `servicekit.serve` is the one launcher (the image runs it too): a factory app, no access
    log of uvicorn's, no Server banner, a header deadline and connection caps, and
    `WEB_CONCURRENCY` worker processes (1 here: see the README, "How it runs").
    """
    return [
        sys.executable,
        "-m",
        "servicekit.serve",
        service.entry.app,
        "--env-prefix",
        service.prefix,
        "--host",
        HOST,
        "--port",
        str(service.port),
    ]


def plan(services: tuple[Service, ...]) -> list[dict[str, Any]]:
    """What `up` would do, service by service in start order; nothing is started or written."""
    env = child_env(services)
    return [
        {
            "name": service.name,
            "port": service.port,
            "url": service.url,
            "metrics": f"{HOST}:{service.port}",
            "setup": [[sys.executable, *args] for _, args in setup_steps(service)],
            "command": command(service),
            "downstreams": {
                setting: env[setting]
                for setting in map(service.entry.url_setting, service.entry.downstreams)
            },
        }
        for service in services
    ]


def run_chain(steps: list[tuple[str, list[str]]], env: dict[str, str]) -> str | None:
    """One service's setup steps in order; the failure's report, or None when all passed."""
    for label, args in steps:
        begin = time.monotonic()
        done = subprocess.run(  # noqa: S603
            [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            return f"FAILED: {label} (exit {done.returncode})\n{done.stdout}{done.stderr}"
        say(f"  {label:<22} done ({time.monotonic() - begin:.1f}s)")
    return None


def migrate_and_seed(services: tuple[Service, ...], env: dict[str, str]) -> None:
    """Every service's migrations, then its seed; the services side by side.

    Each service has a database of its own (or its own tables and version table in a shared
    one), so their setups are independent. Each step is a fresh interpreter that spends most of
    its time importing, so running them side by side roughly halves this phase on two cores.
    """
    say("Migrating databases")
    chains = []
    for service in services:
        url = service.database_url
        if service.entry.database and url.startswith("sqlite:///"):
            # SQLite creates the file, not its directory.
            (REPO / url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if steps := setup_steps(service):
            chains.append(steps)
    with ThreadPoolExecutor(max_workers=max(1, len(chains))) as pool:
        failures = [f for f in pool.map(lambda steps: run_chain(steps, env), chains) if f]
    if failures:
        say("\n".join(failures))
        raise SystemExit(1)


def start(service: Service, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with service.log_file.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            command(service),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service.pid_file.write_text(f"{process.pid}\n")
    return process


def wait_ready(started: dict[Service, subprocess.Popen[bytes]]) -> Service | None:
    """The first service that died or is not ready by the deadline, else None."""
    begin = time.monotonic()
    deadline = begin + READY_TIMEOUT
    for service, process in started.items():
        while not is_ready(service):
            if process.poll() is not None:
                say(f"  {service.name:<10} exited with code {process.returncode}")
                return service
            if time.monotonic() > deadline:
                say(f"  {service.name:<10} not ready after {READY_TIMEOUT:.0f}s")
                return service
            time.sleep(0.2)
        say(f"  {service.name:<10} ready  {service.url}  ({time.monotonic() - begin:.1f}s)")
    return None


def demo_key() -> str:
    configured = os.environ.get("GATEWAY_API_KEYS", "").split(",")[0].split(":")[0].strip()
    return configured or "demo-key"


def prometheus(services: tuple[Service, ...]) -> LocalPrometheus:
    """The optional local Prometheus (infra/local/prometheus_local.py), on this run's ports."""
    return LocalPrometheus(RUN, HOST, {s.default_port: s.port for s in services})


def print_banner(services: tuple[Service, ...], metrics: str) -> None:
    key = demo_key()
    gateway = next(s for s in services if s.entry.gateway)
    say("\nStack is up.")
    for service in services:
        say(f"  {service.name:<10} {service.url}")
    say(f"  logs       {shown(LOGS)}/<service>.log   (stack.py logs [service])")
    say(f"  traces     {shown(TRACES)}/<service>.jsonl   (make trace [TRACE=<id>])")
    say(f"  prometheus {metrics}")
    say(f"  ops page   {gateway.url}/ops   (log in with GATEWAY_ADMIN_TOKEN; dev: dev-admin-token)")
    say(f"\nAPI key: {key}\nTry a checkout:\n")
    say(
        f"curl -sS -X POST {gateway.url}/api/orders \\\n"
        f"  -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f"  -H 'Idempotency-Key: {secrets.token_hex(8)}' \\\n"
        '  -d \'{"items": [{"sku": "mug-stoneware-350ml", "quantity": 1}]}\'\n'
    )
    say("Stop with: make down")


def cmd_up(services: tuple[Service, ...], _: argparse.Namespace) -> int:
    try:
        agent = recovery.Agent(RUN) if recovery.enabled(os.environ) else None
    except ValueError as exc:
        say(str(exc))
        return 2
    for directory in (RUN, PIDS, LOGS):
        directory.mkdir(parents=True, exist_ok=True)
    running = [s.name for s in services if (pid := read_pid(s)) is not None and is_ours(pid, s)]
    if running:
        say(f"Already running: {', '.join(running)}. Run `make down` first.")
        return 1
    for service in services:
        service.pid_file.unlink(missing_ok=True)  # stale: its process is gone
    busy = [f"{s.name} ({s.port})" for s in services if port_in_use(s.port)]
    if busy:
        say(
            f"Port already in use: {', '.join(busy)}. Something else is listening there; "
            "stop it (if it is an earlier stack: `make down`) or set <PREFIX>_PORT."
        )
        return 1
    env = child_env(services)
    migrate_and_seed(services, env)
    say("Starting services")
    started: dict[Service, subprocess.Popen[bytes]] = {}
    log_starts = {s: s.log_file.stat().st_size if s.log_file.exists() else 0 for s in services}
    try:
        if agent is not None:
            # The breaker webhook's default receiver (infra/local/recovery.py).
            env = agent.start(env, [s.prefix for s in services])
        for service in services:
            started[service] = start(service, env)
        failed = wait_ready(started)
        if failed is None and agent is not None and not agent.wait_ready(READY_TIMEOUT):
            say("  recovery   not ready; its log:\n" + "".join(tail(agent.log_file, 20)).rstrip())
            say("\nStopping what was started (RECOVERY=0 starts the stack without the agent).")
            agent.stop()
            stop(list(started))
            return 1
        # Optional, never fatal; started last, once there is something to scrape.
        metrics = prometheus(services).start() if failed is None else ""
    except BaseException:
        if agent is not None:
            agent.stop()
        stop(list(started))
        raise
    if failed is not None:
        # Only what this run wrote: the log file is appended to across runs.
        lines = tail(failed.log_file, 20, since=log_starts[failed])
        say(f"\nLast 20 lines of {shown(failed.log_file)} from this run:")
        say("".join(lines).rstrip() or "(no output yet: still starting?)")
        say("\nStopping what was started.")
        if agent is not None:
            agent.stop()
        stop(list(started))
        return 1
    if agent is not None:
        say(f"  {'recovery':<10} {agent.url}  (breaker webhook receiver; RECOVERY=0: off)")
    print_banner(services, metrics)
    return 0


def cmd_plan(services: tuple[Service, ...], args: argparse.Namespace) -> int:
    steps = plan(services)
    if args.json:
        say(json.dumps(steps, indent=2))
        return 0
    say(f"`up` would start, in this order (run dir {shown(RUN)}):")
    for step in steps:
        say(f"\n{step['name']}  {step['url']}  (metrics {step['metrics']}/metrics)")
        for argv in step["setup"]:
            say(f"  setup    {' '.join(argv)}")
        say(f"  command  {' '.join(step['command'])}")
        for setting, url in step["downstreams"].items():
            say(f"  env      {setting}={url}")
    return 0


# --- down, status, logs ---------------------------------------------------------------------------


def cmd_down(services: tuple[Service, ...], _: argparse.Namespace) -> int:
    say("Stopping services")
    if prometheus(services).stop():
        say(f"  {'prometheus':<10} stopped")
    # The agent before the services: it would restart what is being stopped.
    if recovery.Agent(RUN).stop():
        say(f"  {'recovery':<10} stopped")
    # Canaries first (infra/local/instances.py): they are callees of the stable services.
    for extra in instances.stop_all(RUN, {s.name: s.name for s in services}):
        say(f"  {extra:<10} stopped")
    stop(services)
    busy = wait_ports_free(services)
    if busy:
        ports = ", ".join(f"{s.name} ({s.port})" for s in busy)
        say(
            f"Still in use after stopping: {ports}. Not started by this stack; check with "
            "`ss -ltnp`."
        )
        return 1
    say("Stopped; ports are free.")
    return 0


def cmd_status(services: tuple[Service, ...], _: argparse.Namespace) -> int:
    say(f"{'service':<10} {'pid':>8} {'alive':<6} {'port':>5} {'ready':<5}")
    all_ready = True
    for service in services:
        pid = read_pid(service)
        alive = pid is not None and is_ours(pid, service)
        ready = is_ready(service)
        all_ready = all_ready and alive and ready
        say(
            f"{service.name:<10} {pid or '-':>8} {'yes' if alive else 'no':<6} "
            f"{service.port:>5} {'yes' if ready else 'no':<5}"
        )
    # Optional: shown, but never part of the exit code.
    local = prometheus(services)
    pid = local.pid()
    say(
        f"{'prometheus':<10} {pid or '-':>8} {'yes' if pid else 'no':<6} "
        f"{local.port:>5} {'yes' if local.is_ready() else 'no':<5}"
    )
    agent = recovery.Agent(RUN)
    pid, url = agent.pid(), agent.url or ""
    ready = pid is not None and instances.is_ready(url)
    port = url.rpartition(":")[2] or "-"
    say(
        f"{'recovery':<10} {pid or '-':>8} {'yes' if pid else 'no':<6} "
        f"{port:>5} {'yes' if ready else 'no':<5}"
    )
    return 0 if all_ready else 3


def cmd_logs(services: tuple[Service, ...], args: argparse.Namespace) -> int:
    chosen = [s for s in services if s.name == args.service] if args.service else list(services)
    label = len(chosen) > 1
    for service in chosen:
        for line in tail(service.log_file, args.n or 10):
            say(f"{service.name:<10}| {line.rstrip()}" if label else line.rstrip())
    if args.n:
        return 0
    # tail -f: follow every file from its current end; files may appear later.
    offsets = {s: s.log_file.stat().st_size if s.log_file.exists() else 0 for s in chosen}
    try:
        while True:
            for service in chosen:
                if not service.log_file.exists():
                    continue
                with service.log_file.open("rb") as handle:
                    if service.log_file.stat().st_size < offsets[service]:
                        offsets[service] = 0  # truncated
                    handle.seek(offsets[service])
                    chunk = handle.read()
                    offsets[service] = handle.tell()
                for line in chunk.decode(errors="replace").splitlines():
                    say(f"{service.name:<10}| {line}" if label else line)
            time.sleep(0.3)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    try:
        chosen = services()
    except (manifest.ManifestError, OSError) as exc:
        print(f"stack.py: cannot read the service manifest: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description="Run the local stack (see infra/local/README.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="migrate, seed, start every service, wait until ready")
    commands.add_parser("down", help="stop what `up` started")
    commands.add_parser("status", help="pid, liveness, port and readiness per service")
    plan_parser = commands.add_parser("plan", help="print what `up` would start; start nothing")
    plan_parser.add_argument("--json", action="store_true", help="as JSON, one object a service")
    logs = commands.add_parser("logs", help="follow the logs (or print the last N lines)")
    logs.add_argument("service", nargs="?", choices=sorted(s.name for s in chosen))
    logs.add_argument("-n", type=int, default=0, help="print the last N lines and exit")
    args = parser.parse_args(argv)
    handler = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "plan": cmd_plan,
        "logs": cmd_logs,
    }
    try:
        return handler[args.command](chosen, args)
    except KeyboardInterrupt:
        # `up` has already stopped whatever it had started (see cmd_up).
        say("\nInterrupted." + (" Nothing is left running." if args.command == "up" else ""))
        return 130


if __name__ == "__main__":
    sys.exit(main())
