"""B1: the servicekit middleware stack (tracing off) vs a bare FastAPI app, trivial route.

Both apps answer `GET /hello` under a real uvicorn, measured in turns in one run with wrk
(see asgi_bench.py). The kit app has tracing off (no exporter configured; B2 turns it on) and
otherwise runs a deployed service's defaults: its JSON access log goes to a file under the
default policy (every error and slow request, 5% of the other requests: `<P>_ACCESS_LOG_SAMPLE`,
which `make up` sets to 1.0). Target: >= 0.90x bare throughput.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from asgi_bench import Server, free_port, measure, ratio_to, setup_note, summary
from report import write

RUNS = 5
TARGET = 0.90


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="b1-") as tmp:
        logs = Path(tmp)
        servers = [
            Server("bare FastAPI", "bare_app", free_port(), {}, logs / "bare.log"),
            Server(
                "servicekit stack, tracing off",
                "kit_app",
                free_port(),
                {"OTEL_SDK_DISABLED": "true"},
                logs / "kit.log",
            ),
        ]
        print(f"B1: {RUNS} rounds; {setup_note()}", flush=True)
        results = measure(servers, RUNS)
    bare, kit = (summary(results[s.name]) for s in servers)
    ratio = ratio_to(results, servers[1].name, servers[0].name)
    rows = [
        [s.name, f"{m['rps']:.0f}", f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", ratio_text]
        for s, m, ratio_text in (
            (servers[0], bare, "1.00x"),
            (servers[1], kit, f"**{ratio:.2f}x**"),
        )
    ]
    verdict = "PASS" if ratio >= TARGET else f"FAIL (target >= {TARGET:.2f}x)"
    write(
        "b1_middleware",
        "B1: servicekit middleware stack vs bare FastAPI",
        (__doc__ or "") + "\n" + setup_note(),
        [
            (
                f"Median of {RUNS} rounds: {ratio:.2f}x bare, {verdict}",
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
            "target": TARGET,
            "pass": ratio >= TARGET,
            "runs": RUNS,
            "load_generator": "wrk",
            "setup": setup_note(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
