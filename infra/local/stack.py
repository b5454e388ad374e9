"""Local stack runner: the four services as local processes (stdlib only).

    python infra/local/stack.py up | down | status | logs [service] [-n N]

State lives in `.run/` at the repo root (STACK_RUN_DIR moves it, so a test can run a private
stack beside yours): `pids/<service>.pid`, `logs/<service>.log`, `traces/<service>.jsonl`
(spans, printed by `make trace`) and the default SQLite files.
Configuration is the environment, passed through to every service, so
`ORDER_DATABASE_URL=postgresql://...` or `INVENTORY_REDIS_URL=redis://...` switch backends.
Ports: ORDER_PORT, INVENTORY_PORT, PAYMENT_PORT, GATEWAY_PORT (defaults 8001-8003, 8000).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
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
from dataclasses import dataclass
from pathlib import Path

import instances
from prometheus_local import LocalPrometheus

REPO = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("STACK_RUN_DIR") or REPO / ".run").resolve()
PIDS = RUN / "pids"
LOGS = RUN / "logs"
TRACES = RUN / "traces"
HOST = "127.0.0.1"
READY_TIMEOUT = float(os.environ.get("STACK_READY_TIMEOUT", "60"))
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Service:
    name: str
    default_port: int
    has_database: bool

    @property
    def prefix(self) -> str:
        return self.name.upper()

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


# Start order: dependencies first, so order and gateway find their upstreams ready.
INVENTORY = Service("inventory", 8002, True)
PAYMENT = Service("payment", 8003, True)
ORDER = Service("order", 8001, True)
GATEWAY = Service("gateway", 8000, False)
SERVICES = (INVENTORY, PAYMENT, ORDER, GATEWAY)
BY_NAME = {s.name: s for s in SERVICES}


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
    """Alive, not a zombie, and still our uvicorn (a recycled pid is someone else's)."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False
    return state != "Z" and "uvicorn" in cmdline and f"{service.name}.main" in cmdline


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


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for service in SERVICES:
        env[f"{service.prefix}_PORT"] = str(service.port)
    # Upstreams follow the ports; an explicitly set URL wins.
    env.setdefault("ORDER_INVENTORY_URL", INVENTORY.url)
    env.setdefault("ORDER_PAYMENT_URL", PAYMENT.url)
    env.setdefault("GATEWAY_INVENTORY_URL", INVENTORY.url)
    env.setdefault("GATEWAY_ORDER_URL", ORDER.url)
    env.setdefault("GATEWAY_PAYMENT_URL", PAYMENT.url)
    # Traces without a backend: each service appends its spans to .run/traces/<service>.jsonl
    # (`make trace` prints one). Locally every request is traced, and spans reach the file
    # within half a second; the standard OTEL_* variables, when set, win.
    for service in SERVICES:
        env.setdefault(f"{service.prefix}_TRACES_FILE", str(TRACES / f"{service.name}.jsonl"))
        # Every access line too (deployed services log errors, slow and sampled requests).
        env.setdefault(f"{service.prefix}_ACCESS_LOG_SAMPLE", "1.0")
        # Canary routes every process follows (`make canary`, /admin/canary/{service}).
        env.setdefault(f"{service.prefix}_ROUTING_FILE", str(RUN / "routing.json"))
        if service.has_database:
            # The database that was migrated (under STACK_RUN_DIR too), not the app's default.
            env[f"{service.prefix}_DATABASE_URL"] = service.database_url
    if "OTEL_TRACES_SAMPLER" not in env and "OTEL_TRACES_SAMPLER_ARG" not in env:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "500")
    return env


def run_step(label: str, args: list[str], env: dict[str, str]) -> None:
    say(f"  {label}")
    done = subprocess.run(  # noqa: S603
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        say(f"FAILED: {label} (exit {done.returncode})\n{done.stdout}{done.stderr}")
        raise SystemExit(1)


def migrate_and_seed(env: dict[str, str]) -> None:
    say("Migrating databases")
    for service in (ORDER, INVENTORY, PAYMENT):
        url = service.database_url
        if url.startswith("sqlite:///"):
            # SQLite creates the file, not its directory.
            (REPO / url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        run_step(
            f"{service.name}: migrations",
            ["-m", "servicekit.data.migrations", service.name, url],
            env,
        )
    run_step("inventory: seed", ["-m", "inventory.seed", INVENTORY.database_url], env)


def start(service: Service, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{service.name}.main:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(service.port),
        "--no-access-log",
        "--no-server-header",  # no banner telling attackers what runs here
    ]
    with service.log_file.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            command,
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


def prometheus() -> LocalPrometheus:
    """The optional local Prometheus (infra/local/prometheus_local.py), on this run's ports."""
    return LocalPrometheus(RUN, HOST, {s.default_port: s.port for s in SERVICES})


def print_banner(metrics: str) -> None:
    key = demo_key()
    say("\nStack is up.")
    for service in SERVICES:
        say(f"  {service.name:<10} {service.url}")
    say(f"  logs       {shown(LOGS)}/<service>.log   (stack.py logs [service])")
    say(f"  traces     {shown(TRACES)}/<service>.jsonl   (make trace [TRACE=<id>])")
    say(f"  prometheus {metrics}")
    say(f"\nAPI key: {key}\nTry a checkout:\n")
    say(
        f"curl -sS -X POST {GATEWAY.url}/api/orders \\\n"
        f"  -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f"  -H 'Idempotency-Key: {secrets.token_hex(8)}' \\\n"
        '  -d \'{"items": [{"sku": "mug-stoneware-350ml", "quantity": 1}]}\'\n'
    )
    say("Stop with: make down")


def cmd_up(_: argparse.Namespace) -> int:
    for directory in (RUN, PIDS, LOGS):
        directory.mkdir(parents=True, exist_ok=True)
    running = [s.name for s in SERVICES if (pid := read_pid(s)) is not None and is_ours(pid, s)]
    if running:
        say(f"Already running: {', '.join(running)}. Run `make down` first.")
        return 1
    for service in SERVICES:
        service.pid_file.unlink(missing_ok=True)  # stale: its process is gone
    busy = [f"{s.name} ({s.port})" for s in SERVICES if port_in_use(s.port)]
    if busy:
        say(
            f"Port already in use: {', '.join(busy)}. Something else is listening there; "
            "stop it (if it is an earlier stack: `make down`) or set <SERVICE>_PORT."
        )
        return 1
    env = child_env()
    migrate_and_seed(env)
    say("Starting services")
    started: dict[Service, subprocess.Popen[bytes]] = {}
    log_starts = {s: s.log_file.stat().st_size if s.log_file.exists() else 0 for s in SERVICES}
    try:
        for service in SERVICES:
            started[service] = start(service, env)
        failed = wait_ready(started)
        # Optional, never fatal; started last, once there is something to scrape.
        metrics = prometheus().start() if failed is None else ""
    except BaseException:
        stop(list(started))
        raise
    if failed is not None:
        # Only what this run wrote: the log file is appended to across runs.
        lines = tail(failed.log_file, 20, since=log_starts[failed])
        say(f"\nLast 20 lines of {shown(failed.log_file)} from this run:")
        say("".join(lines).rstrip() or "(no output yet: still starting?)")
        say("\nStopping what was started.")
        stop(list(started))
        return 1
    print_banner(metrics)
    return 0


# --- down, status, logs ---------------------------------------------------------------------------


def cmd_down(_: argparse.Namespace) -> int:
    say("Stopping services")
    if prometheus().stop():
        say(f"  {'prometheus':<10} stopped")
    # Canaries first (infra/local/instances.py): they are callees of the stable services.
    for extra in instances.stop_all(RUN, {s.name: s.name for s in SERVICES}):
        say(f"  {extra:<10} stopped")
    stop(SERVICES)
    busy = wait_ports_free(SERVICES)
    if busy:
        ports = ", ".join(f"{s.name} ({s.port})" for s in busy)
        say(
            f"Still in use after stopping: {ports}. Not started by this stack; check with "
            "`ss -ltnp`."
        )
        return 1
    say("Stopped; ports are free.")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    say(f"{'service':<10} {'pid':>8} {'alive':<6} {'port':>5} {'ready':<5}")
    all_ready = True
    for service in SERVICES:
        pid = read_pid(service)
        alive = pid is not None and is_ours(pid, service)
        ready = is_ready(service)
        all_ready = all_ready and alive and ready
        say(
            f"{service.name:<10} {pid or '-':>8} {'yes' if alive else 'no':<6} "
            f"{service.port:>5} {'yes' if ready else 'no':<5}"
        )
    # Optional: shown, but never part of the exit code.
    local = prometheus()
    pid = local.pid()
    say(
        f"{'prometheus':<10} {pid or '-':>8} {'yes' if pid else 'no':<6} "
        f"{local.port:>5} {'yes' if local.is_ready() else 'no':<5}"
    )
    return 0 if all_ready else 3


def cmd_logs(args: argparse.Namespace) -> int:
    services = [BY_NAME[args.service]] if args.service else list(SERVICES)
    label = len(services) > 1
    for service in services:
        for line in tail(service.log_file, args.n or 10):
            say(f"{service.name:<10}| {line.rstrip()}" if label else line.rstrip())
    if args.n:
        return 0
    # tail -f: follow every file from its current end; files may appear later.
    offsets = {s: s.log_file.stat().st_size if s.log_file.exists() else 0 for s in services}
    try:
        while True:
            for service in services:
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
    parser = argparse.ArgumentParser(description="Run the local stack (see infra/local/README.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="migrate, seed, start every service, wait until ready")
    commands.add_parser("down", help="stop what `up` started")
    commands.add_parser("status", help="pid, liveness, port and readiness per service")
    logs = commands.add_parser("logs", help="follow the logs (or print the last N lines)")
    logs.add_argument("service", nargs="?", choices=sorted(BY_NAME))
    logs.add_argument("-n", type=int, default=0, help="print the last N lines and exit")
    args = parser.parse_args(argv)
    handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "logs": cmd_logs}
    try:
        return handler[args.command](args)
    except KeyboardInterrupt:
        # `up` has already stopped whatever it had started (see cmd_up).
        say("\nInterrupted." + (" Nothing is left running." if args.command == "up" else ""))
        return 130


if __name__ == "__main__":
    sys.exit(main())
