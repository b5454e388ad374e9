"""B2: the servicekit stack with tracing on, at the default sampling, vs a bare FastAPI app.

The same trivial route, declared the same way, and the same turns as B1 (see asgi_bench.py).
Tracing is on as in local mode: spans are batched (BatchSpanProcessor) into a JSON-lines
file. The default sampler is `parentbased_traceidratio` at 0.1 (wrk sends no `traceparent`,
so each request is a new root: one in ten is recorded, the rest still get trace ids and a
propagated `traceparent`).
Every request with a recorded trace also writes its access line (servicekit.telemetry.logs).
For scale, the same app recording every request (`parentbased_always_on`, what `make up` uses)
is measured too. Target: default sampling >= 0.60x bare.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from asgi_bench import Server, compare, free_port

RUNS = 5
#: uvicorn processes per app, averaged per round (asgi_bench.measure says why).
PROCESSES = 3
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
        compare(
            "b2_tracing",
            "B2: servicekit with tracing on vs bare FastAPI",
            __doc__ or "",
            servers,
            target=TARGET,
            runs=RUNS,
            processes=PROCESSES,
            extra=lambda: {"spans_written": sum(1 for _ in (out / "spans.jsonl").open())},
        )


if __name__ == "__main__":
    main()
