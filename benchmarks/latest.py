"""Write benchmarks/results/latest.md: every benchmark, its target, its result, met or not, when.

    python benchmarks/latest.py      # `make bench` runs it last

Each row is read from the benchmark's result JSON. A result is *stale* when the code it
measured changed since: a result that recorded its code (`measured`: paths and a hash of their
files, see `report.measured_tree`) is compared with the files as they are now; an older one is
stale when a commit after the one that last wrote its JSON touched the paths below.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import REPO, RESULTS, code_hash

Verdict = tuple[str, bool | None]


def _b3(d: dict[str, Any]) -> Verdict:
    met = d["ratio"] <= 2 and d["once_constructions"] == 1
    return f"{d['ratio']:.2f}x, {d['once_constructions']} construction(s)", met


def _b4(d: dict[str, Any]) -> Verdict:
    peaks = ", ".join(f"{name} {t['peak_rps']:,.0f}/s" for name, t in d["targets"].items())
    missed = d["missed"]
    return f"peak {peaks}; missed: {len(missed)} of the cells' targets", not missed


def _b5(d: dict[str, Any]) -> Verdict:
    t = d["targets"]
    met = d["fast_fail_p99_ms"] <= t["fast_fail_p99_ms"] and (
        d["throughput_ratio"] >= t["throughput_ratio"]
    )
    return f"fast-fail p99 {d['fast_fail_p99_ms']:.2f} ms, {d['throughput_ratio']:.2f}x", met


def _b6(d: dict[str, Any]) -> Verdict:
    p99 = {
        phase: statistics.median(s["p99_ms"] for s in runs) for phase, runs in d["samples"].items()
    }
    refused = sum(s["limiter_failures"] for runs in d["samples"].values() for s in runs)
    worst = max(p99[p] - p99["healthy"] for p in p99 if p != "healthy")
    return f"p99 +{worst:.1f} ms at worst, {refused:.0f} limiter 5xx/refusals", (
        worst <= d["target_p99_delta_ms"] and refused == 0
    )


def _ratio(d: dict[str, Any]) -> Verdict:
    return f"{d['ratio']:.2f}x", bool(d["pass"])


def _b2(d: dict[str, Any]) -> Verdict:
    result = f"{d['ratio']:.2f}x, p99 {d['p99_ratio']:.2f}x bare's"
    return result, d["ratio"] >= d["target"] and d["p99_ratio"] <= d["p99_target"]


def _b7(d: dict[str, Any]) -> Verdict:
    """Published, not judged: its result with the answers that were not orders."""
    cells = [d["default"]] if "default" in d else d["after"]  # the 50-user cell, when recorded
    refused = sum(sum(cell["not_201"].values()) for cell in cells)
    orders = sum(cell["orders"] for cell in cells)
    answers = f"at {d['users']} users non-201 answers: {refused} (orders: {orders})"
    return f"{d['result']}; {answers}", None


@dataclass(frozen=True)
class Benchmark:
    id: str
    name: str
    target: str
    verdict: Callable[[dict[str, Any]], Verdict]
    #: What it measures: a later change here makes an older result stale.
    paths: Sequence[str]


KIT = "libs/servicekit/src"
BENCHMARKS = (
    Benchmark("B1", "b1_middleware", "kit stack >= 0.90x bare FastAPI", _ratio, (KIT,)),
    Benchmark(
        "B2",
        "b2_tracing",
        "tracing at default sampling: >= 0.75x bare, p99 <= 1.5x bare's",
        _b2,
        (KIT,),
    ),
    Benchmark("B3", "b3_once", "Once.get <= 2x a global; one construction", _b3, (KIT,)),
    Benchmark(
        "B4",
        "b4_overload",
        "client-side: served p99 <= 500 ms, shed p99 <= 50 ms; goodput 2x >= 90 %, 4x >= 80 %",
        _b4,
        (KIT, "services/inventory/src", "loadtest/src"),
    ),
    Benchmark("B5", "b5_breaker", "fast-fail p99 <= 5 ms; closed >= 0.9x", _b5, (KIT,)),
    Benchmark(
        "B6",
        "b6_redis_outage",
        "p99 within 10 ms of healthy; zero limiter 5xx",
        _b6,
        (KIT, "gateway/src"),
    ),
    Benchmark(
        "B7",
        "b7_checkout",
        "orders/s, p50, p99 at 50 users with per-hop shares (published, no threshold)",
        _b7,
        ("gateway/src", "services", KIT),
    ),
    Benchmark(
        "B8",
        "b8_seed",
        "the seed's tables reproduced",
        lambda d: ("see b8_seed.md", None),
        (KIT,),
    ),
    Benchmark(
        "B9",
        "b9_routing",
        "routing decision well under B1's noise",
        lambda d: (f"decision {d['decision_us'] * 1000:.0f} ns", bool(d["pass"])),
        (KIT,),
    ),
)


def _git(*args: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def stale(benchmark: Benchmark, data: dict[str, Any], result: Path) -> bool:
    """Whether the code this result measured has changed since it was measured."""
    measured = data.get("measured")
    if isinstance(measured, dict) and "hash" in measured:
        return bool(code_hash(measured["paths"]) != measured["hash"])
    written = _git("log", "-1", "--format=%H", "--", str(result.relative_to(REPO)))
    if not written:
        return True  # never committed: nothing tells what it measured
    return bool(_git("log", "-1", "--format=%H", f"{written}..HEAD", "--", *benchmark.paths))


def row(benchmark: Benchmark) -> list[str]:
    result = RESULTS / f"{benchmark.name}.json"
    if not result.exists():
        return [benchmark.id, benchmark.target, "not measured", "-", "-", "-"]
    data = json.loads(result.read_text())
    found, met = benchmark.verdict(data)
    verdict = "n/a" if met is None else ("met" if met else "**not met**")
    where = str(data.get("python", "?"))
    if data.get("uptime_before"):
        where += f", load {data['uptime_before']}"
    when = str(data.get("measured_at", "?"))
    if stale(benchmark, data, result):
        when += " (**stale**: measured code changed since)"
    return [benchmark.id, benchmark.target, found, verdict, when, where]


def main() -> Path:
    header = ("id", "target", "result", "met", "measured", "where")
    lines = [
        "# Benchmarks: the latest result of each",
        "",
        "Written by `make bench` (benchmarks/latest.py) from benchmarks/results/*.json.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row(b)) + " |" for b in BENCHMARKS]
    out = RESULTS / "latest.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
