"""Private PostgreSQL and Redis servers that a chaos test may stop, restart or kill.

Same binaries as the machine's shared servers, each on a free port in a temp dir of its own;
the shared servers (5432, 6379) are never touched. PostgreSQL refuses to run as root, so
under root its processes run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("CHAOS_REDIS_SERVER", "redis-server")
HOST = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _postgres_user() -> dict[str, Any]:
    """subprocess kwargs that drop root to the `postgres` user (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam("postgres")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


class PrivatePostgres:
    """A throw-away PostgreSQL cluster: `start`, `restart`, `stop`, one database per stack.

    Durability: `fsync=off` and `full_page_writes=off` only give up safety against an OS
    crash or power loss. Commits stay synchronous (`synchronous_commit=on`), so a committed
    transaction's WAL is written to the kernel before the client hears "committed"; killing
    PostgreSQL itself (even `pg_ctl -m immediate`, which is what `restart` does) loses no
    committed data: crash recovery replays that WAL from the page cache.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = _postgres_user()
        if self._as_postgres:
            os.chown(self.root, self._as_postgres["user"], self._as_postgres["group"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [str(PG_BIN / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            # pg_ctl's server inherits these: a pipe here would never reach EOF.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
            **self._as_postgres,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}\n{log}"
            )

    def initialise(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "on",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop (by default like a crash: no checkpoint, sessions cut) and start again."""
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.is_running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A throw-away redis-server without persistence; `kill` is SIGKILL, `start` again reuses
    the port, so clients configured with its URL find it back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.root / "redis.log"),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}")
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
