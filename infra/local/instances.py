"""Extra instances of a service beside the ones `make up` started: a canary, a replacement.

An instance is started the way the stable one was: its command line, environment and working
directory are read from `/proc/<stable pid>`, so there is no second copy of the launch command
to drift from `stack.py`. Only the port, the version and what the caller adds differ. Each
instance has a role (`canary`, `standby`) and keeps `pids/<service>-<role>.pid` and
`logs/<service>-<role>.log` under the run directory; `make down` stops them (`stop_all`).
Stdlib only, like stack.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
STOP_TIMEOUT = 15.0
#: Roles of extra instances (file name suffixes), stopped by `make down`: a canary, and the
#: standby the recovery agent starts (infra/local/recovery_ops.py).
ROLES = ("canary", "standby")


@dataclass(frozen=True)
class Launch:
    """How a process was started: enough to start another like it."""

    argv: list[str]
    env: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, pid: int) -> Launch:
        proc = Path(f"/proc/{pid}")
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        env = dict(
            entry.decode().split("=", 1)
            for entry in (proc / "environ").read_bytes().split(b"\0")
            if b"=" in entry
        )
        return cls(argv, env, os.readlink(proc / "cwd"))

    def on_port(self, port: int) -> list[str]:
        """The command line with `--port` set to `port`."""
        argv = list(self.argv)
        index = argv.index("--port")
        argv[index + 1] = str(port)
        return argv


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_alive(pid: int, module: str) -> bool:
    """Alive, not a zombie, and still a server of `module` (pids are recycled)."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False
    return state != "Z" and "servicekit.serve" in cmdline and f"{module}.main" in cmdline


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def terminate(pid: int, alive: Callable[[], bool], timeout: float) -> None:
    """SIGTERM the process group `pid` leads (started in its own session), SIGKILL it if it is
    still `alive()` after `timeout` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@dataclass
class Instance:
    """One process of a service, started here (`start`) or found by its pid file."""

    name: str
    module: str
    port: int
    pid_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def alive(self) -> bool:
        if self.process is not None:
            # Started here: its exit status is the truth. /proc is not, just after the start:
            # the parent resumes before the kernel has set the new program's arguments, so
            # its cmdline reads empty for a moment.
            return self.process.poll() is None
        pid = self.pid
        return pid is not None and is_alive(pid, self.module)

    def start(self, launch: Launch, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start it like `launch`, on `self.port`, with `env` over the launch's environment."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                launch.on_port(self.port),
                cwd=launch.cwd,
                env={**launch.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.process.pid}\n")
        return self.process

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            if is_ready(self.url):
                return True
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (uvicorn finishes the requests in flight), then SIGKILL after `timeout`."""
        pid = self.pid
        if pid is not None and is_alive(pid, self.module):
            terminate(pid, lambda: is_alive(pid, self.module), timeout)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)


def instance(run: Path, name: str, module: str, port: int, role: str | None = None) -> Instance:
    """The instance of service `name` with `role` (None: the stable one `make up` started)."""
    stem = name if role is None else f"{name}-{role}"
    return Instance(name, module, port, run / "pids" / f"{stem}.pid", run / "logs" / f"{stem}.log")


def stop_all(run: Path, modules: Mapping[str, str]) -> list[str]:
    """Stop every extra instance under `run` ({service: module}); clear the canary routes.

    The routes would point at ports nobody serves any more; the callers would fall back to
    stable on each refused connection, but a route without its canary has no reason to stay.
    """
    stopped = []
    for name, module in modules.items():
        for role in ROLES:
            extra = instance(run, name, module, 0, role)
            if extra.pid_file.exists():
                extra.stop()
                stopped.append(f"{name}-{role}")
    if stopped:
        (run / "routing.json").unlink(missing_ok=True)
    return stopped
