"""B1: the servicekit middleware stack (tracing off) vs a bare FastAPI app, trivial route.

Both apps answer `GET /hello` under a real uvicorn, measured in turns in one run with wrk
(see asgi_bench.py), the route declared the same way in both (an included `APIRouter`). The
kit app has tracing off (no exporter configured; B2 turns it on) and otherwise runs a
deployed service's defaults: its JSON access log goes to a file under the default policy
(every error and slow request, 1% of the other requests: `<P>_ACCESS_LOG_SAMPLE`, which
`make up` sets to 1.0). The kit turns FastAPI's native telemetry off (it makes its own spans
and metrics); the bare app keeps FastAPI's defaults. For scale, a bare app with the route on
the app itself (no router) is measured too. Target: >= 0.90x bare throughput.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from asgi_bench import Server, compare, free_port

RUNS = 5
#: uvicorn processes per app, averaged per round (asgi_bench.measure says why).
PROCESSES = 3
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
            Server(
                "bare FastAPI, route on the app (no router)",
                "bare_app_route_on_app",
                free_port(),
                {},
                logs / "bare-app.log",
            ),
        ]
        compare(
            "b1_middleware",
            "B1: servicekit middleware stack vs bare FastAPI",
            __doc__ or "",
            servers,
            target=TARGET,
            runs=RUNS,
            processes=PROCESSES,
        )


if __name__ == "__main__":
    main()
