"""The capacity report's PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtest.outcomes import BUSINESS, ERROR, OK, SHED


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt


def _knee_lines(axis: Any, result: Mapping[str, Any]) -> None:
    found = result["knee"]
    if found["sustainable_offered"] is not None:
        axis.axvline(found["sustainable_offered"], color="green", linestyle=":", label="sustained")
    if found["saturated_offered"] is not None:
        axis.axvline(found["saturated_offered"], color="red", linestyle=":", label="saturated")


def draw(
    folder: Path,
    steps: Sequence[Mapping[str, Any]],
    result: Mapping[str, Any],
    run: Mapping[str, Any],
) -> list[str]:
    """Write the plots into `folder`; their file names."""
    plt = _pyplot()
    ordered = sorted(steps, key=lambda s: s["offered"])
    offered = [s["offered"] for s in ordered]
    names: list[str] = []

    def save(figure: Any, name: str) -> None:
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        names.append(name)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(offered, offered, color="grey", linestyle="--", label="offered")
    axis.plot(offered, [s["achieved"] for s in ordered], marker="o", label="answered")
    axis.plot(offered, [s["goodput"] for s in ordered], marker="o", label="goodput (within SLO)")
    _knee_lines(axis, result)
    axis.set(xlabel="offered load (requests/s)", ylabel="requests/s", title="Throughput")
    axis.legend()
    save(figure, "throughput.png")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        axis.plot(offered, [s[key] for s in ordered], marker="o", label=label)
    axis.axhline(run["slo"]["p99_ms"], color="red", linestyle="--", label="SLO p99")
    _knee_lines(axis, result)
    axis.set_yscale("log")
    axis.set(
        xlabel="offered load (requests/s)",
        ylabel="ms from the scheduled send",
        title="Client-side latency (answers not shed)",
    )
    axis.legend()
    save(figure, "latency.png")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for outcome in (OK, BUSINESS, SHED, ERROR):
        axis.plot(
            offered,
            [s["outcomes"][outcome] / s["seconds"] for s in ordered],
            marker="o",
            label=outcome,
        )
    axis.plot(offered, [s["dropped"] / s["seconds"] for s in ordered], marker="o", label="dropped")
    _knee_lines(axis, result)
    axis.set(xlabel="offered load (requests/s)", ylabel="answers/s", title="Outcomes")
    axis.legend()
    save(figure, "outcomes.png")

    figure, (cpu, pool) = plt.subplots(1, 2, figsize=(11, 4.5))
    services = sorted({n for s in ordered for n in s["services"]})
    for name in services:
        cores = [s["services"].get(name, {}).get("cpu_cores") for s in ordered]
        if any(c is not None for c in cores):
            cpu.plot(offered, cores, marker="o", label=name)
        used = [s["services"].get(name, {}).get("pool_used_max") for s in ordered]
        if any(u is not None for u in used):
            pool.plot(offered, used, marker="o", label=name)
    host = [s.get("host_cpu") for s in ordered]
    if any(h is not None for h in host):
        count = run.get("cpu_count") or 1
        cpu.plot(
            offered,
            [None if h is None else count * h for h in host],
            linestyle="--",
            color="black",
            label=f"whole host ({count} cores)",
        )
    cpu.set(xlabel="offered load (requests/s)", ylabel="CPU cores", title="CPU per service")
    pool.set(
        xlabel="offered load (requests/s)",
        ylabel="connections in use (max sampled)",
        title="DB pool in use",
    )
    for axis in (cpu, pool):
        _knee_lines(axis, result)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    save(figure, "services.png")
    return names
