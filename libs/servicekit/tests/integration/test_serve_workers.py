"""`WEB_CONCURRENCY` worker processes behind one port (python -m servicekit.serve, for real)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> set[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in found.read_text().split()} if found.exists() else set()


async def test_web_concurrency_runs_that_many_workers_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WEB_CONCURRENCY": "2", "PYTHONPATH": str(HERE)}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servicekit.serve", "pid_app:create_app", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(
            timeout=2, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            while len(seen) < 2 and time.monotonic() < deadline:
                try:
                    answers = await asyncio.gather(
                        *(client.get(f"http://127.0.0.1:{port}/") for _ in range(8))
                    )
                except httpx.TransportError:
                    await asyncio.sleep(0.2)  # still starting
                    continue
                seen |= {int(a.text) for a in answers}
        assert len(seen) == 2, (tmp_path / "serve.log").read_text()[-2000:]
        assert seen <= children(proc.pid), "the answers came from other processes"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in seen), "a worker outlived SIGTERM"
