"""The Prometheus of the local stack: optional, started by `stack.py up` when installed.

`up` renders `observability/prometheus/prometheus.local.yml` into `<run>/prometheus/`: its
service targets are built from the manifest (`services.toml`) on the ports the stack really
uses, then links the rules next to it (so `rules/*.yml` resolve and edits
apply on a reload), and runs `prometheus` with its data in `<run>/prometheus/data`; its pid
file and log are in that folder too.

- PROMETHEUS_PORT (9090): where it listens (127.0.0.1 only).
- PROMETHEUS_SCRAPE_INTERVAL: scrape and rule evaluation interval (the file says 5s).
- STACK_PROMETHEUS=0: do not start it (a test's private stack that does not need it).

Nothing here may fail `up`: a missing binary, a busy port or a Prometheus that does not start
is reported in one line, and the services run on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script (stack.py): the manifest reader is infra/
    sys.path.insert(0, str(REPO))
from infra.manifest import load  # noqa: E402

TEMPLATE = REPO / "observability" / "prometheus" / "prometheus.local.yml"
RULES = TEMPLATE.parent / "rules"
DEFAULT_PORT = 9090
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
INSTALL_HINT = (
    "apt-get install prometheus (Debian/Ubuntu), brew install prometheus, "
    "or a binary from https://prometheus.io/download/"
)
_ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")
#: The service targets' block in the template, between these markers (infra/render.py writes
#: the same block into the file, so it reads and checks as it is).
_REGION = re.compile(r"(?ms)^( *)(# >>> generated \(targets\)[^\n]*\n).*?^( *# <<< generated\n)")


def targets_block(targets: Iterable[tuple[str, str]], indent: int = 6) -> str:
    """`static_configs` entries, one per `(service, address)`, each labelled `service`."""
    pad = " " * indent
    return "".join(
        f'{pad}- targets: ["{address}"]\n{pad}  labels:\n{pad}    service: {name}\n'
        for name, address in targets
    )


_INTERVAL = re.compile(r"(?m)^(  (?:scrape|evaluation)_interval:) *\S+")


def render(template: str, ports: dict[int, int], interval: str | None = None) -> str:
    """`template` with one target per manifest service, each on its real port.

    `ports` maps a default port to the one the stack uses (`<P>_PORT`, `PROMETHEUS_PORT`);
    the services' block is rebuilt from the manifest and every other `127.0.0.1:<port>` (the
    Prometheus itself) is moved too. `interval` replaces the global intervals.
    """

    def moved(match: re.Match[str]) -> str:
        port = int(match.group(1))
        return f"127.0.0.1:{ports.get(port, port)}"

    def services(match: re.Match[str]) -> str:
        targets = ((s.name, f"127.0.0.1:{ports.get(s.port, s.port)}") for s in load())
        indent = len(match.group(1))
        return match.group(1) + match.group(2) + targets_block(targets, indent) + match.group(3)

    text, found = _REGION.subn(services, _ADDRESS.sub(moved, template))
    if found != 1:
        raise ValueError("the template has no '# >>> generated (targets)' block")
    if interval:
        text = _INTERVAL.sub(lambda m: f"{m.group(1)} {interval}", text)
    return text


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class LocalPrometheus:
    """One Prometheus per run directory; `ports` maps each default port to the real one."""

    def __init__(self, run: Path, host: str, ports: dict[int, int]) -> None:
        # All of it in its own folder: pids/ and logs/ hold the services' (JSON-lines) only.
        self.dir = run / "prometheus"
        self.config = self.dir / "prometheus.yml"
        self.pid_file = self.dir / "prometheus.pid"
        self.log_file = self.dir / "prometheus.log"
        self.host = host
        raw = os.environ.get("PROMETHEUS_PORT") or str(DEFAULT_PORT)
        valid = raw.isdigit() and 0 < int(raw) < 65536
        self.port_error = None if valid else f"PROMETHEUS_PORT={raw!r} is not a port number"
        self.port = int(raw) if valid else DEFAULT_PORT
        self.ports = {**ports, DEFAULT_PORT: self.port}
        self.interval = os.environ.get("PROMETHEUS_SCRAPE_INTERVAL") or None

    @property
    def url(self) -> str:
        """Where the UI and the HTTP API answer."""
        return f"http://{self.host}:{self.port}"

    def pid(self) -> int | None:
        """The pid of our running Prometheus, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        proc = Path(f"/proc/{pid}")
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            return None
        # A recycled pid is someone else's: ours names our config file.
        return pid if state != "Z" and str(self.config) in cmdline else None

    def is_ready(self) -> bool:
        """True when Prometheus answers its readiness endpoint."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def start(self) -> str:
        """Start it if possible; returns the line for the banner (never raises)."""
        try:
            return self._start()
        except OSError as exc:
            return f"not started ({exc}); the services run without it"

    def _start(self) -> str:
        if os.environ.get("STACK_PROMETHEUS") == "0":
            return "not started (STACK_PROMETHEUS=0)"
        binary = shutil.which("prometheus")
        if binary is None:
            return f"not installed, so not started (optional). To get it: {INSTALL_HINT}"
        if self.port_error is not None:
            return f"not started: {self.port_error}"
        if self.pid() is not None:
            return f"{self.url}  (already running)"
        if _port_in_use(self.host, self.port):
            return f"not started: port {self.port} is in use (set PROMETHEUS_PORT)"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render(TEMPLATE.read_text(), self.ports, self.interval))
        rules = self.dir / "rules"
        if rules.is_symlink():
            rules.unlink()  # the checkout may have moved since the last run
        rules.symlink_to(RULES, target_is_directory=True)
        command = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={self.host}:{self.port}",
            # Exemplars: the trace ids the services attach to latency buckets.
            "--enable-feature=exemplar-storage",
        ]
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603
                command,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not self.is_ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    return f"did not start (see {self.log_file}); the services run without it"
                time.sleep(0.2)
        except BaseException:  # interrupted: leave nothing behind
            self.stop()
            raise
        return self.url

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL after 10 s; True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)  # stale: its process is gone
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # its own session: pgid == pid
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
