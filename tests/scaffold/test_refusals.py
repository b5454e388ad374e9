"""`make new-service` refuses bad input before writing anything, and says what is valid."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT, clean_env


def snapshot(root: Path) -> dict[str, str]:
    """Every file under services/ and the files the command would edit, by content hash."""
    files = [*root.glob("services/**/*"), root / "services.toml", root / "uv.lock"]
    files += [root / "docker-compose.yml", *root.glob("infra/k8s/**/*")]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def bound_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def new_service(*knobs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/new_service.py", *knobs],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CASES = [
    (("NAME=Shipping",), "not a valid service name"),
    (("NAME=1shipping",), "not a valid service name"),
    (("NAME=ship-ing",), "not a valid service name"),
    (("NAME=class",), "not a valid service name"),
    (("NAME=",), "NAME is required"),
    ((), "NAME is required"),
    (("NAME=order",), r"taken: services.toml already has it \(services: .*payment"),
    (("NAME=gateway",), "taken"),
    (("NAME=json",), "standard library module"),
    (("NAME=asyncio",), "standard library module"),
    (("NAME=httpx",), "installed distribution"),
    (("NAME=yaml",), "installed distribution"),  # PyYAML: the import name differs
    (("NAME=shipping", "PORT=8001"), "PORT=8001 is taken by order"),
    (("NAME=shipping", "PORT=80"), "outside 1024..65535"),
    (("NAME=shipping", "PORT=eighty"), "not a number"),
    (("NAME=shipping", "DOWNSTREAMS=inventory,nope"), r"unknown service\(s\) nope; valid: "),
    (("NAME=shipping", "DOWNSTREAMS=gateway"), r"unknown service\(s\) gateway"),
    (("NAME=shipping", "DOWNSTREAMS=payment,payment"), "twice"),
    (("NAME=shipping", "PUBLIC=maybe"), "use PUBLIC=1"),
    (("NAME=shipping", "PROT=9000"), r"unknown knob 'PROT=9000'; valid: NAME=.*PORT=.*DOWNSTREAMS"),
    (("shipping",), "unknown knob"),
]


@pytest.mark.parametrize(("knobs", "message"), CASES, ids=[" ".join(k) or "-" for k, _ in CASES])
def test_bad_input_is_refused_and_nothing_is_written(knobs: tuple[str, ...], message: str) -> None:
    before = snapshot(ROOT)
    done = new_service(*knobs)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert "nothing was written" in done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert snapshot(ROOT) == before


def test_a_port_bound_on_this_machine_is_refused(bound_port: int) -> None:
    before = snapshot(ROOT)
    done = new_service("NAME=shipping", f"PORT={bound_port}")
    assert done.returncode == 2
    assert f"PORT={bound_port} is in use on this machine; free: " in done.stderr
    assert snapshot(ROOT) == before


def test_make_passes_the_knobs_and_lists_the_valid_ones() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "new-service", "NAME=shipping", "DOWNSTREAM=inventory"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "unknown knob 'DOWNSTREAM=inventory'; valid: NAME=" in done.stderr
    assert not (ROOT / "services" / "shipping").exists()
