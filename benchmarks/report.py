"""Write a benchmark's results as Markdown and JSON under benchmarks/results/."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    """Run `measure` `runs` times; return the median and every sample."""
    samples = [measure() for _ in range(runs)]
    return statistics.median(samples), samples


Table = tuple[str, Sequence[str], Sequence[Sequence[Any]]]


def write(name: str, title: str, intro: str, tables: Sequence[Table], data: dict[str, Any]) -> Path:
    """Write `<name>.md` (one Markdown table per section) and `<name>.json`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}"
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    lines = [f"# {title}", "", intro.strip(), "", f"Measured {stamp} on {machine}."]
    for heading, header, rows in tables:
        lines += [
            "",
            f"## {heading}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    md = RESULTS / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    payload = {"benchmark": name, "measured_at": stamp, "python": machine, **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print("\n".join(lines))
    return md


def uptime() -> str:
    """The load averages (1, 5, 15 min) as `uptime` shows them: the machine may be shared."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def code_hash(paths: Sequence[str]) -> str:
    """A hash of the files under `paths` as they are now: tracked ones with uncommitted edits,
    and new ones not yet added (not ignored), which a measurement may already run."""
    listed = subprocess.run(  # noqa: S603
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    files = sorted(f for f in listed.decode().split("\0") if f and (REPO / f).is_file())
    blobs = subprocess.run(
        ["git", "hash-object", "--stdin-paths"],  # noqa: S607
        cwd=REPO,
        input="\n".join(files),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    digest = hashlib.sha256()
    for name, blob in zip(files, blobs, strict=True):
        digest.update(f"{name} {blob}\n".encode())
    return digest.hexdigest()


def measured_tree(paths: Sequence[str]) -> dict[str, Any]:
    """What a result measured: the code paths, their hash now, and the commit they sat on."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"paths": list(paths), "hash": code_hash(paths), "commit": head}
