"""`summary.json` of a run, built from Locust's stats CSVs and the outcome tally, and the SLO gate.

The gate has two thresholds:

- `p99_ms`: the p99 latency of every answer that was not shed (ok, business and error). Shed
  answers are excluded because they are fast on purpose: counting them would let a stack that
  refuses most of its traffic pass on the speed of its refusals.
- `error_rate`: errors over all answers (shed and business outcomes are not errors).

A run without a single non-shed answer fails the p99 check (nothing was served to time).

Counts (requests, per endpoint too, and outcomes) come from the tally, which counts every
answer up to the last. Locust rewrites its stats CSV once a second and not at exit, so the
CSV may miss the answers of the run's last second: per-endpoint percentiles and rps come from
it, and `locust_failures` is its failure count.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtest.outcomes import ERROR, OUTCOMES, SHED, Tally, percentile

PERCENTILES = {"p50": "50%", "p95": "95%", "p99": "99%"}


def _number(raw: str | None) -> float | None:
    if raw in (None, "", "N/A"):
        return None
    return float(raw)


def read_endpoints(stats_csv: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per endpoint (Locust's `name=`) and the aggregated row of `<prefix>_stats.csv`."""
    endpoints: dict[str, dict[str, Any]] = {}
    aggregated: dict[str, Any] = {}
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            entry: dict[str, Any] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                **{key: _number(row.get(column)) for key, column in PERCENTILES.items()},
            }
            if row["Name"] == "Aggregated":
                aggregated = entry
            else:
                endpoints[row["Name"]] = entry
    return endpoints, aggregated


def peak_users(history_csv: Path) -> int:
    """The most users that ran at once, from `<prefix>_stats_history.csv` (0 if absent)."""
    if not history_csv.exists():
        return 0
    with history_csv.open(newline="") as handle:
        return max((int(row["User Count"] or 0) for row in csv.DictReader(handle)), default=0)


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else value


def build(
    *,
    prefix: Path,
    outcomes: Mapping[str, Any],
    run: Mapping[str, Any],
    slo_p99_ms: float,
    slo_error_rate: float,
) -> dict[str, Any]:
    """The summary of one run.

    `prefix`: Locust's `--csv` prefix; `outcomes`: the locustfile's outcome file (a `Tally`
    dict plus `started` and `stopped`, epoch seconds); `run`: what the runner knows (scenario,
    host, dye, workers...), copied in.
    """
    endpoints, aggregated = read_endpoints(Path(f"{prefix}_stats.csv"))
    tally = Tally.from_dict(outcomes)
    for name, entry in endpoints.items():
        counted = tally.endpoints.get(name)
        entry["outcomes"] = counted or dict.fromkeys(OUTCOMES, 0)
        if counted:
            entry["requests"] = sum(counted.values())
    duration = max(0.0, float(outcomes.get("stopped", 0.0)) - float(outcomes.get("started", 0.0)))
    total = tally.total
    served = tally.histogram(o for o in OUTCOMES if o != SHED)
    p99 = _ms(percentile(served, 0.99))
    error_rate = tally.counts[ERROR] / total if total else 1.0
    checks = [
        {
            "name": "p99_ms",
            "what": "p99 latency of the answers not shed, ms",
            "threshold": slo_p99_ms,
            "measured": p99,
            "passed": p99 is not None and p99 <= slo_p99_ms,
        },
        {
            "name": "error_rate",
            "what": "errors / all answers",
            "threshold": slo_error_rate,
            "measured": error_rate,
            "passed": total > 0 and error_rate <= slo_error_rate,
        },
    ]
    everything = tally.histogram(OUTCOMES)
    return {
        **run,
        "users": peak_users(Path(f"{prefix}_stats_history.csv")),
        "duration_s": round(duration, 3),
        "requests": total,
        "rps": round(total / duration, 3) if duration else 0.0,
        "locust_failures": aggregated.get("failures", 0),
        #: Answers per Locust worker (empty when Locust ran alone).
        "per_worker": dict(outcomes.get("per_worker", {})),
        "outcomes": {
            outcome: {
                "count": tally.counts[outcome],
                "rate": tally.counts[outcome] / total if total else 0.0,
            }
            for outcome in OUTCOMES
        },
        "latency_ms": {
            "all": {q: _ms(percentile(everything, float(q[1:]) / 100)) for q in PERCENTILES},
            "not_shed": {q: _ms(percentile(served, float(q[1:]) / 100)) for q in PERCENTILES},
            "endpoints": endpoints,
        },
        "slo": {"passed": all(c["passed"] for c in checks), "checks": checks},
    }


def describe(summary: Mapping[str, Any]) -> str:
    """A few lines for the terminal: load, outcomes, latency, the verdict."""
    outcomes = summary["outcomes"]
    rates = ", ".join(f"{o} {outcomes[o]['rate']:.1%}" for o in OUTCOMES)
    lines = [
        f"{summary.get('scenario', '?')}: {summary['requests']} requests in "
        f"{summary['duration_s']:.0f} s ({summary['rps']:.1f}/s), {summary['users']} users",
        f"outcomes: {rates}",
    ]
    for name, entry in sorted(summary["latency_ms"]["endpoints"].items()):
        shown = " / ".join("-" if entry[q] is None else f"{entry[q]:.0f}" for q in PERCENTILES)
        lines.append(f"  {name:<26} {entry['requests']:>7} req  p50/p95/p99 {shown} ms")
    for check in summary["slo"]["checks"]:
        measured = check["measured"]
        shown = "none" if measured is None else f"{measured:.4g}"
        verdict = "ok" if check["passed"] else "BROKEN"
        lines.append(f"SLO {check['name']}: {shown} (threshold {check['threshold']:g}) {verdict}")
    lines.append("SLO passed" if summary["slo"]["passed"] else "SLO FAILED")
    return "\n".join(lines)
