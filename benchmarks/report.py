"""Write a benchmark's results as Markdown and JSON under benchmarks/results/."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


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
