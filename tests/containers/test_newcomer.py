"""A machine without root or apt: `make install` and `make up` still work, Prometheus optional.

`apt-get` and `sudo` are shims that fail, `prometheus`/`promtool` are off PATH; the stack is
private (own STACK_RUN_DIR, free ports), so it never touches the default ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from .support import REPO

HIDDEN = {"apt-get", "apt", "sudo", "prometheus", "promtool"}


def _no_root_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("apt-get", "sudo"):
        shim = bin_dir / name
        shim.write_text('#!/bin/sh\necho "$0: not allowed here" >&2\nexit 1\n')
        shim.chmod(0o755)
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if d and Path(d).is_dir()]
    for directory in dirs:
        for entry in Path(directory).iterdir():
            target = bin_dir / entry.name
            if entry.name not in HIDDEN and not target.exists() and os.access(entry, os.X_OK):
                target.symlink_to(entry)
    return str(bin_dir)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_install_and_up_without_apt_or_prometheus(tmp_path: Path) -> None:
    from infra.manifest import load

    path = _no_root_path(tmp_path)
    assert shutil.which("prometheus", path=path) is None
    env = {**os.environ, "PATH": path, "STACK_RUN_DIR": str(tmp_path / "run")}
    env.pop("VIRTUAL_ENV", None)
    for service, port in zip(load(), _free_ports(len(load())), strict=True):
        env[f"{service.prefix}_PORT"] = str(port)
        env.pop(f"{service.prefix}_DATABASE_URL", None)

    install = subprocess.run(
        ["make", "install"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert "prometheus not found: optional" in install.stdout
    assert "apt-get install prometheus" in install.stdout
    try:
        up = subprocess.run(
            ["make", "up"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        assert "not installed, so not started (optional)" in up.stdout + up.stderr
    finally:
        down = subprocess.run(
            ["make", "down"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert down.returncode == 0, down.stdout + down.stderr
