"""B2: the servicekit stack with tracing on, at the default sampling, vs a bare FastAPI app.

The same trivial route, declared the same way, and the same turns as B1 (see asgi_bench.py).
Tracing is on as in local mode: sampled spans go to a JSON-lines file through the kit's
`LineBatchProcessor` (each span encoded as it ends, a thread only writes). The default
sampler is `parentbased_traceidratio` at 0.1 (wrk sends no `traceparent`, so each request is
a new root: one in ten is recorded, the rest still get trace ids and a propagated
`traceparent`). Every request with a recorded trace also writes its access line
(servicekit.telemetry.logs). For scale, the same app recording every request
(`parentbased_always_on`, what `make up` uses) is measured too.

Targets, default sampling against bare in the same round (medians of the rounds):
throughput >= 0.75x, and p99 <= 1.5x bare's p99. Latency is wrk's, client-side: wrk keeps
its connections busy (closed loop), so a server stall shows as one slow answer per
connection rather than as a queue behind it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from asgi_bench import Server, free_port, measure, ratio_to, setup_note, summary
from report import write

RUNS = 5
#: uvicorn processes per app, averaged per round (asgi_bench.measure says why).
PROCESSES = 2
THROUGHPUT_TARGET = 0.75
P99_TARGET = 1.5
DEFAULT = "servicekit, tracing on (default 0.1)"


def load_average() -> str:
    """The 1/5/15-minute load averages (`uptime`), so a reader sees how busy the machine was."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def p99_ratio(results: dict[str, list[dict[str, float]]], name: str, baseline: str) -> float:
    """Median over rounds of `name`'s p99 divided by the baseline's p99 in the same round."""
    pairs = zip(results[name], results[baseline], strict=True)
    return statistics.median(ours["p99_ms"] / base["p99_ms"] for ours, base in pairs)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="b2-") as tmp:
        out = Path(tmp)
        traced = {"BENCH_TRACES_FILE": str(out / "spans.jsonl")}
        servers = [
            Server("bare FastAPI", "bare_app", free_port(), {}, out / "bare.log"),
            Server(DEFAULT, "kit_app", free_port(), traced, out / "kit.log"),
            Server(
                "servicekit, tracing on (always on)",
                "kit_app",
                free_port(),
                {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
                out / "kit-all.log",
            ),
        ]
        load_before = load_average()
        print(f"b2_tracing: {RUNS} rounds; {setup_note(PROCESSES)}", flush=True)
        results = measure(servers, RUNS, PROCESSES)
        load_after = load_average()
        spans_written = sum(1 for _ in (out / "spans.jsonl").open())
    baseline = servers[0].name
    ratios = {s.name: ratio_to(results, s.name, baseline) for s in servers}
    tails = {s.name: p99_ratio(results, s.name, baseline) for s in servers}
    passed = ratios[DEFAULT] >= THROUGHPUT_TARGET and tails[DEFAULT] <= P99_TARGET
    verdict = (
        "PASS"
        if passed
        else f"FAIL (targets: >= {THROUGHPUT_TARGET:.2f}x throughput, p99 <= {P99_TARGET}x bare)"
    )
    rows = []
    for server in servers:
        median = summary(results[server.name])
        mark = "**" if server.name == DEFAULT else ""
        rows.append(
            [
                server.name,
                f"{median['rps']:.0f}",
                f"{mark}{ratios[server.name]:.2f}x{mark}",
                f"{median['p50_ms']:.2f}",
                f"{median['p99_ms']:.2f}",
                f"{mark}{tails[server.name]:.2f}x{mark}",
            ]
        )
    shared = (
        f"Load average (1/5/15 min, `uptime`) before the run {load_before}, after {load_after}: "
        "the 2-core machine was shared with other work while this ran, so absolute req/s and "
        "ms are low and noisy; the ratios, taken round by round, are the figures."
    )
    write(
        "b2_tracing",
        "B2: servicekit with tracing on vs bare FastAPI",
        (__doc__ or "") + "\n" + setup_note(PROCESSES) + "\n\n" + shared,
        [
            (
                f"Median of {RUNS} rounds: default sampling {ratios[DEFAULT]:.2f}x bare "
                f"throughput, p99 {tails[DEFAULT]:.2f}x bare's, {verdict}",
                ["app", "req/s", "vs bare", "p50 ms", "p99 ms", "p99 vs bare"],
                rows,
            ),
            (
                "Every round: req/s, p99 ms",
                ["round", *(s.name for s in servers)],
                [
                    [
                        i + 1,
                        *(
                            f"{results[s.name][i]['rps']:.0f}, {results[s.name][i]['p99_ms']:.1f}"
                            for s in servers
                        ),
                    ]
                    for i in range(RUNS)
                ],
            ),
        ],
        {
            "ratio": ratios[DEFAULT],
            "p99_ratio": tails[DEFAULT],
            "ratios": ratios,
            "p99_ratios": tails,
            "target": THROUGHPUT_TARGET,
            "p99_target": P99_TARGET,
            "pass": passed,
            "runs": RUNS,
            "processes": PROCESSES,
            "load_generator": "wrk",
            "setup": setup_note(PROCESSES),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "machine_shared": True,
            "results": results,
            "spans_written": spans_written,
        },
    )


if __name__ == "__main__":
    main()
