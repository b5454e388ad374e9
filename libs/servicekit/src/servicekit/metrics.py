"""Prometheus metrics: one registry per app (several apps can live in one test process).

Names follow the OpenTelemetry HTTP semantic conventions where they exist
(`http.server.request.duration` -> `http_server_request_duration_seconds`).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds) around a 10 ms - 2 s service SLO.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metrics every service exports, in a registry of its own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.active_requests = Gauge(
            "http_server_active_requests", "HTTP server requests in flight.", registry=self.registry
        )
        self.recovered_exceptions = Counter(
            "servicekit_recovered_exceptions",
            "Exceptions turned into 500 by the recovery middleware.",
            ["exception"],
            registry=self.registry,
        )


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI: RED metrics per route template (never the raw path: bounded cardinality)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.active_requests.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.active_requests.dec()
            self.metrics.request_duration.labels(
                scope["method"], _route_of(scope), str(status)
            ).observe(time.perf_counter() - start)
