"""B2: the servicekit stack with tracing on, at the default sampling, vs a bare FastAPI app.

The same trivial route and the same turns as B1 (see asgi_bench.py). Tracing is on as in local
mode: spans are batched (BatchSpanProcessor) into a JSON-lines file. The default sampler is
`parentbased_traceidratio` at 0.1 (wrk sends no `traceparent`, so each request is a new root:
one in ten is recorded, the rest still get trace ids and a propagated `traceparent`).
Every request with a recorded trace also writes its access line (servicekit.logs).
For scale, the same app recording every request (`parentbased_always_on`, what `make up` uses)
is measured too. Target: default sampling >= 0.60x bare.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from asgi_bench import Server, free_port, measure, ratio_to, setup_note, summary
from report import write

RUNS = 5
TARGET = 0.60


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="b2-") as tmp:
        out = Path(tmp)
        traced = {"BENCH_TRACES_FILE": str(out / "spans.jsonl")}
        servers = [
            Server("bare FastAPI", "bare_app", free_port(), {}, out / "bare.log"),
            Server(
                "servicekit, tracing on (default 0.1)",
                "kit_app",
                free_port(),
                traced,
                out / "kit.log",
            ),
            Server(
                "servicekit, tracing on (always on)",
                "kit_app",
                free_port(),
                {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
                out / "kit-all.log",
            ),
        ]
        print(f"B2: {RUNS} rounds; {setup_note()}", flush=True)
        results = measure(servers, RUNS)
        spans_written = sum(1 for _ in (out / "spans.jsonl").open())
    ratios = [1.0, *(ratio_to(results, s.name, servers[0].name) for s in servers[1:])]
    medians = [summary(results[s.name]) for s in servers]
    ratio = ratios[1]
    verdict = "PASS" if ratio >= TARGET else f"FAIL (target >= {TARGET:.2f}x)"
    rows = [
        [s.name, f"{m['rps']:.0f}", f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{r:.2f}x"]
        for s, m, r in zip(servers, medians, ratios, strict=True)
    ]
    write(
        "b2_tracing",
        "B2: servicekit with tracing on vs bare FastAPI",
        (__doc__ or "") + "\n" + setup_note(),
        [
            (
                f"Median of {RUNS} rounds: default sampling {ratio:.2f}x bare, {verdict}",
                ["app", "req/s", "p50 ms", "p99 ms", "throughput vs bare"],
                rows,
            ),
            (
                "Every round (req/s)",
                ["round", *(s.name for s in servers)],
                [
                    [i + 1, *(f"{results[s.name][i]['rps']:.0f}" for s in servers)]
                    for i in range(RUNS)
                ],
            ),
        ],
        {
            "ratio": ratio,
            "ratio_always_on": ratios[2],
            "target": TARGET,
            "pass": ratio >= TARGET,
            "spans_written": spans_written,
            "runs": RUNS,
            "load_generator": "wrk",
            "setup": setup_note(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
