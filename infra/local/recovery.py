"""The recovery agent's process, as `make up`, `make down` and `make status` see it (stdlib only).

`make up` starts the agent (infra/local/recovery_agent.py, under uvicorn) before the services,
on a free port (`RECOVERY_PORT` to choose one), and points every service's
`<P>_BREAKER_WEBHOOK_URL` at it. The agent itself keeps the environment as it was, so it reads
the user's own `<P>_BREAKER_WEBHOOK_URL` values and forwards every notice there.
`RECOVERY=0` leaves the agent out and the webhook settings untouched.

State: `recovery/agent.pid` and `recovery/agent.url` under the run directory (not in `pids/`,
which holds the services), its log in `logs/recovery.log`, one report per recovery in
`recovery/<time>-<service>.json`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import instances

KNOB = "RECOVERY"
#: The agent's webhook route (the path every service's breaker webhook posts to).
HOOK_PATH = "/hooks/breaker"
STOP_TIMEOUT = 10.0


def enabled(environ: Mapping[str, str]) -> bool:
    """RECOVERY=1 (the default) or 0; `ValueError` naming the valid values otherwise."""
    value = environ.get(KNOB, "").strip() or "1"
    if value not in ("0", "1"):
        raise ValueError(f"{KNOB}={value!r}: valid: 1 (the recovery agent runs) or 0 (off)")
    return value == "1"


class Agent:
    """The agent process of one run directory."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.pid_file = run / "recovery" / "agent.pid"
        self.url_file = run / "recovery" / "agent.url"
        self.log_file = run / "logs" / "recovery.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str | None:
        try:
            return self.url_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def pid(self) -> int | None:
        """The recorded pid if it is still our agent (pids are recycled)."""
        pid = instances.read_pid(self.pid_file)
        if pid is None:
            return None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            return None
        return pid if state != "Z" and "recovery_agent" in cmdline else None

    def start(self, env: Mapping[str, str], prefixes: Iterable[str]) -> dict[str, str]:
        """Start the agent with `env`; the services' environment: `env` pointing at it."""
        port = int(env.get("RECOVERY_PORT") or instances.free_port())
        url = f"http://{instances.HOST}:{port}"
        for path in (self.pid_file, self.log_file):
            path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "recovery_agent:create_app",
            "--factory",
            "--app-dir",
            str(Path(__file__).parent),
            "--host",
            instances.HOST,
            "--port",
            str(port),
            "--no-access-log",
            "--no-server-header",
        ]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                argv,
                env={**env, "STACK_RUN_DIR": str(self.run)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.process.pid}\n")
        self.url_file.write_text(f"{url}\n")
        hook = f"{url}{HOOK_PATH}"
        return {**env, **{f"{prefix}_BREAKER_WEBHOOK_URL": hook for prefix in prefixes}}

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            url = self.url
            if url and instances.is_ready(url):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> bool:
        """SIGTERM (SIGKILL after 10 s); True if it was running. Files removed either way."""
        pid = self.pid()
        if pid is not None:
            instances.terminate(pid, lambda: self.pid() is not None, STOP_TIMEOUT)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)
        self.url_file.unlink(missing_ok=True)
        return pid is not None
