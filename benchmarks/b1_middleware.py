"""B1: the servicekit middleware stack (tracing off) vs a bare FastAPI app, trivial route.

Both apps answer `GET /hello` under a real uvicorn, measured in turns in one run with wrk
(see asgi_bench.py), the route declared the same way in both (an included `APIRouter`). The
kit app has tracing off (no exporter configured; B2 turns it on) and otherwise runs a
deployed service's defaults: its JSON access log goes to a file under the default policy
(every error and slow request, 1% of the other requests: `<P>_ACCESS_LOG_SAMPLE`, which
`make up` sets to 1.0). The kit turns FastAPI's native telemetry off (it makes its own spans
and metrics); the bare app keeps FastAPI's defaults. For scale, a bare app with the route on
the app itself (no router) is measured too. Target: >= 0.90x bare throughput.

The same kit app with the gateway's ops-page collector running in its lifespan (issue 16) is
measured too: once a second it reads the app's own registry and scrapes `/healthz`, `/readyz`
and `/metrics` of three services (a fourth uvicorn process, not measured, serving the kit app),
as the gateway does while someone has `/ops` open. Its ratio against the kit app alone is
the collector's cost to the request path.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from asgi_bench import Server, compare, free_port, kit_app, serving

RUNS = 5
#: uvicorn processes per app, averaged per round (asgi_bench.measure says why).
PROCESSES = 3
TARGET = 0.90


def kit_app_with_ops_collector() -> Any:
    """B1's kit app with the ops collector running, scraping `B1_OPS_TARGET` as three services."""
    from fastapi import FastAPI
    from gateway.ops.collector import OpsCollector
    from servicekit import RoutingTable

    app = kit_app()
    inner = app.router.lifespan_context
    target = os.environ["B1_OPS_TARGET"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            collector = OpsCollector(
                services={"self": None, "order": target, "inventory": target, "payment": target},
                registry=app.state.metrics.registry,
                routing=RoutingTable(),
                traces_dir=None,
                canary_dir=None,
            )

            async def look() -> None:  # a page kept open: the collector never goes idle
                while True:
                    collector.watch()
                    await asyncio.sleep(5)

            watcher = asyncio.create_task(look())
            try:
                yield state
            finally:
                watcher.cancel()
                await collector.aclose()

    app.router.lifespan_context = lifespan
    return app


def main() -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="b1-") as tmp:
        logs = Path(tmp)
        target = Server("scrape target", "kit_app", free_port(), {}, logs / "target.log")
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
            Server(
                "servicekit stack + ops collector",
                "kit_app_with_ops_collector",
                free_port(),
                {"OTEL_SDK_DISABLED": "true", "B1_OPS_TARGET": target.url.removesuffix("/hello")},
                logs / "kit-ops.log",
                module="b1_middleware",
            ),
        ]
        with serving([target]):
            compare(
                "b1_middleware",
                "B1: servicekit middleware stack vs bare FastAPI",
                (__doc__ or "")
                + f"\nLoad average (1, 5, 15 min) before the run: {_load(load_before)}; "
                "the machine is shared.\n",
                servers,
                target=TARGET,
                runs=RUNS,
                processes=PROCESSES,
                extra=lambda: {
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                },
            )


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
