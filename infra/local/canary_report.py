"""What `make canary` leaves behind: `.run/canary/<timestamp>/` with `result.json`,
`report.md` and `canary.png` (latency p99 and 5xx share per second, canary against stable)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from canary_stats import percentile

#: (unix time, side, latency ms, is 5xx) of every request judged.
Sample = tuple[float, str, float, bool]


def _figure(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    lines = [
        f"# Canary of {result['service']} {result['version']}: {result['outcome']}",
        "",
        f"- reason: {result['reason']}",
        f"- started {result['started_at']}, {result['seconds']:.1f} s",
        f"- steps (percent): {', '.join(_figure(s['weight']) for s in result['steps'])}",
        f"- canary environment: `{result['canary_env'] or '-'}`",
        "- samples: each instance's JSON access log (latency_ms, status); runtime "
        "figures from its /metrics",
        "",
        "| step | weight % | seconds | canary n | canary 5xx | stable n | stable 5xx "
        "| canary p99 ms | stable p99 ms | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, step in enumerate(result["steps"], start=1):
        f = step["figures"]
        lines.append(
            f"| {index} | {_figure(step['weight'])} | {step['seconds']:.1f} "
            f"| {f['canary_requests']} | {f['canary_errors']} | {f['stable_requests']} "
            f"| {f['stable_errors']} | {_figure(f['canary_p99_ms'])} "
            f"| {_figure(f['stable_p99_ms'])} | {step['verdict']} |"
        )
    lines += ["", "## Checks per step", ""]
    for index, step in enumerate(result["steps"], start=1):
        lines.append(f"Step {index} ({_figure(step['weight'])} %): **{step['verdict']}**")
        lines += [f"- {c['name']}: {c['verdict']}: {c['detail']}" for c in step["checks"]]
        lines.append("")
    client = result.get("client")
    if client:
        lines += [
            "## What clients saw (the load driver)",
            "",
            f"{client['requests']} answers, {client['server_errors']} 5xx, "
            f"{client['no_answer']} without an answer.",
            "",
        ]
    lines.append("![canary against stable](canary.png)")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(path: Path, samples: Sequence[Sample], steps: Sequence[dict[str, Any]]) -> None:
    # matplotlib takes about 2 s to import: only the run that draws pays for it.
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    if not samples:
        samples = [(0.0, "stable", 0.0, False)]
    origin = min(s[0] for s in samples)
    buckets: dict[tuple[str, int], list[tuple[float, bool]]] = defaultdict(list)
    for at, side, latency, error in samples:
        buckets[(side, int(at - origin))].append((latency, error))
    figure, (latency_axis, error_axis) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for side, colour in (("stable", "tab:blue"), ("canary", "tab:orange")):
        seconds = sorted(second for s, second in buckets if s == side)
        p99 = [percentile([lat for lat, _ in buckets[(side, x)]], 99) for x in seconds]
        errors = [
            100 * sum(e for _, e in buckets[(side, x)]) / len(buckets[(side, x)]) for x in seconds
        ]
        latency_axis.plot(seconds, p99, label=f"{side} p99", color=colour, marker=".")
        error_axis.plot(seconds, errors, label=f"{side} 5xx %", color=colour, marker=".")
    for step in steps:
        for axis in (latency_axis, error_axis):
            axis.axvline(step["started_at"] - origin, color="grey", linewidth=0.6)
        latency_axis.annotate(
            f"{_figure(step['weight'])}%",
            (step["started_at"] - origin, 1),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            va="top",
        )
    latency_axis.set_ylabel("latency p99 (ms)")
    latency_axis.set_yscale("symlog")
    error_axis.set_ylabel("5xx share (%)")
    error_axis.set_xlabel("seconds since the first step")
    latency_axis.legend(loc="upper left")
    error_axis.legend(loc="upper left")
    figure.suptitle("canary against stable, per second")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(directory: Path, result: dict[str, Any], samples: Sequence[Sample]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_markdown(directory / "report.md", result)
    write_plot(directory / "canary.png", samples, result["steps"])
