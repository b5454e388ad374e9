"""Prometheus metrics: one registry per app (several apps can live in one test process).

Names follow the OpenTelemetry HTTP semantic conventions where they exist
(`http.server.request.duration` -> `http_server_request_duration_seconds`).
The service itself is not a label: Prometheus adds it as a target label (`service`, see
`observability/prometheus/`). The RED histogram carries the process's `version`, so a canary
and its stable twin are told apart without a join; any other series joins
`servicekit_build_info{version}` on `instance`. Each registry also has the runtime's own
collectors: `python_gc_collections_total{generation}` (GC frequency, judged per request by
`make canary`), `process_resident_memory_bytes` and `process_cpu_seconds_total` (CPU per
process: `make capacity` and `make capacity-plan`).

Exemplars: the request-duration histogram and the business counters carry the trace id of a
sampled request. They are exposed only in the OpenMetrics format, which `/metrics` serves to a
scraper that asks for it (Prometheus does).
"""

from __future__ import annotations

import gc
import os
import platform
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from servicekit import context
from servicekit.once import construction_counts

#: Latency buckets (seconds) around a 10 ms - 2 s service SLO.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def traffic() -> str:
    """`shadow` for dyed load-test traffic, else `live`: the label that keeps tests out of SLOs."""
    return "shadow" if context.get(context.SHADOW) else "live"


def exemplar() -> dict[str, str] | None:
    """`{"trace_id": ...}` of the current request if its trace is sampled, else None.

    Pass it to `Counter.inc(exemplar=...)` / `Histogram.observe(..., exemplar=...)`. An unsampled
    trace id would point at a trace nobody kept, so it is left out. The sampled bit is bit 0
    of the request's W3C trace-flags.
    """
    flags = context.get(context.TRACE_FLAGS)
    # Bit 0 of the last hex digit; a string test, so a malformed value cannot raise here.
    if not flags or flags[-1] not in "13579bdf":
        return None
    trace_id = context.get(context.TRACE_ID)
    return {"trace_id": trace_id} if trace_id else None


class OnceConstructions:
    """Collector of `servicekit_once_constructions_total{name}` from the process-wide tally.

    Healthy is 1 per name per process; more means an object was rebuilt (used again after a
    `reset()`) or several share a name: worth a look. Failed constructions are not counted.
    """

    name = "servicekit_once_constructions"
    documentation = (
        "Objects built by Once (clients, pools) in this process: 1 per name is the healthy value."
    )

    def describe(self) -> Iterator[Metric]:
        """The family without samples (the registry checks names when registering)."""
        yield CounterMetricFamily(self.name, self.documentation, labels=["name"])

    def collect(self) -> Iterator[Metric]:
        """One sample per Once name, read at scrape time."""
        family = CounterMetricFamily(self.name, self.documentation, labels=["name"])
        for name, count in sorted(construction_counts().items()):
            family.add_metric([name], count)
        yield family


class RuntimeCollector:
    """`python_gc_collections_total{generation}`, `process_resident_memory_bytes`, CPU seconds.

    Read at scrape time from `gc.get_stats()` and `/proc/self/statm` (Linux; elsewhere the
    memory gauge is left out). prometheus_client's own GC and process collectors export a
    dozen families; these two are what a canary is judged on (GC frequency, memory).
    """

    def describe(self) -> Iterator[Metric]:
        """The families without samples (the registry checks names when registering)."""
        yield from self._families(sample=False)

    def collect(self) -> Iterator[Metric]:
        """The process's figures now."""
        yield from self._families(sample=True)

    def _families(self, *, sample: bool) -> Iterator[Metric]:
        collections = CounterMetricFamily(
            "python_gc_collections",
            "Collections run by the garbage collector, per generation.",
            labels=["generation"],
        )
        memory = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of this process (RSS)."
        )
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "CPU time (user and system) this process has used."
        )
        if sample:
            cpu.add_metric([], time.process_time())
            for generation, stats in enumerate(gc.get_stats()):
                collections.add_metric([str(generation)], stats["collections"])
            pages = _resident_pages()
            if pages is not None:
                memory.add_metric([], pages * _PAGE_SIZE)
        yield collections
        yield memory
        yield cpu


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_pages() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Metrics:
    """The metrics every service exports, in a registry of its own.

    This class is the list of names: dashboards, recording rules and alerts refer to them, and
    the Prometheus test in `tests/observability` fails on any name read there that no service
    declares, and on any panel or recording rule without data.
    """

    def __init__(self, service: str, *, version: str = "") -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # --- Build: 1 per process; join on `instance` to group any series by version --------
        self.build_info = Gauge(
            "servicekit_build_info",
            "Always 1; labels say which version of the service this process runs.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(version or "unknown", platform.python_version()).set(1)
        # --- Runtime: GC collections per generation, resident memory ----------------------
        self.runtime = RuntimeCollector()
        r.register(self.runtime)
        # --- HTTP server (OTel semconv http.server.*) -------------------------------------
        # Observed on every request by the edge layer: kept by a collector of its own (below).
        self.request_duration = ServerDurations(version=version or "unknown")
        r.register(self.request_duration)
        self.active_requests = Gauge(
            "http_server_active_requests", "HTTP server requests in flight.", registry=r
        )
        # --- HTTP client (OTel semconv http.client.*), one series set per downstream --------
        self.client_duration = Histogram(
            "http_client_request_duration_seconds",
            "Duration of outbound HTTP requests, by downstream service.",
            ["server_address", "http_request_method", "http_response_status_code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.client_retries = Counter(
            "servicekit_client_retries",
            "Outbound retries, by downstream and outcome (sent, budget_exhausted).",
            ["server_address", "outcome"],
            registry=r,
        )
        # --- Circuit breakers ---------------------------------------------------------------
        self.breaker_state = Gauge(
            "servicekit_breaker_state",
            "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
            ["dependency"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "servicekit_breaker_transitions",
            "Circuit breaker state changes.",
            ["dependency", "from_state", "to_state"],
            registry=r,
        )
        self.breaker_calls = Counter(
            "servicekit_breaker_calls",
            "Calls through a breaker by outcome (success, failure, slow, rejected).",
            ["dependency", "outcome"],
            registry=r,
        )
        # --- Load shedding, by tier (access, service, data) ---------------------------------
        self.shed_requests = Counter(
            "servicekit_shed_requests",
            "Requests refused by load shedding, by tier and reason.",
            ["tier", "reason", "traffic"],
            registry=r,
        )
        self.degraded_responses = Counter(
            "servicekit_degraded_responses",
            "Responses served in degraded mode (X-Degraded), by reason.",
            ["reason"],
            registry=r,
        )
        self.degraded_mode = Gauge(
            "servicekit_degraded_mode", "1 while reads are served from cache.", registry=r
        )
        self.read_only_mode = Gauge(
            "servicekit_read_only_mode", "1 while the data tier refuses writes.", registry=r
        )
        self.event_loop_lag = Gauge(
            "servicekit_event_loop_lag_seconds",
            "How late the event loop last ran a timer: the wait before any middleware runs.",
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "servicekit_concurrency_limit",
            "Concurrency limit in force in this process (fixed, or adaptive under the fixed one).",
            registry=r,
        )
        self.rate_limit_fallback = Gauge(
            "servicekit_rate_limit_fallback",
            "1 while rate limits are counted per process because their shared store (Redis) "
            "is unavailable.",
            registry=r,
        )
        # --- Database pool (OTel semconv db.client.connection.*) ----------------------------
        self.db_connections = Gauge(
            "db_client_connection_count",
            "Pool connections by state (idle, used).",
            ["pool_name", "state"],
            registry=r,
        )
        self.db_connections_max = Gauge(
            "db_client_connection_max",
            "Most connections the pool may open (size + overflow).",
            ["pool_name"],
            registry=r,
        )
        self.db_overflow = Gauge(
            "db_client_connection_overflow",
            "Connections open beyond the pool size.",
            ["pool_name"],
            registry=r,
        )
        self.db_wait_time = Histogram(
            "db_client_connection_wait_time_seconds",
            "Time spent waiting for a pool connection.",
            ["pool_name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_timeouts = Counter(
            "db_client_connection_timeouts",
            "Pool checkouts that gave up waiting.",
            ["pool_name"],
            registry=r,
        )
        # --- Cache ---------------------------------------------------------------------------
        self.cache_requests = Counter(
            "servicekit_cache_requests",
            "Cache lookups by cache and result: hit, miss or error; a miss answered by a "
            "concurrent read of the same key also counts as coalesced.",
            ["cache", "result"],
            registry=r,
        )
        # --- Business ------------------------------------------------------------------------
        self.idempotent_replays = Counter(
            "servicekit_idempotent_replays",
            "Requests answered from a stored idempotency record.",
            ["traffic"],
            registry=r,
        )
        self.saga_outcomes = Counter(
            "servicekit_saga_outcomes",
            "Checkout sagas by outcome (confirmed, declined, out_of_stock, rejected, failed).",
            ["outcome", "traffic"],
            registry=r,
        )
        self.saga_compensations = Counter(
            "servicekit_saga_compensations",
            "Compensating actions run (release, refund).",
            ["action", "traffic"],
            registry=r,
        )
        # --- Kit internals -------------------------------------------------------------------
        self.recovered_exceptions = Counter(
            "servicekit_recovered_exceptions",
            "Exceptions turned into 500 by recovery (the edge layer).",
            ["exception"],
            registry=r,
        )
        # Once objects live outside any app, so this is a collector over the process tally.
        self.once_constructions = OnceConstructions()
        r.register(self.once_constructions)


#: Request methods kept as a label value; any other becomes `_OTHER` (OTel semconv), so a
#: client inventing methods cannot add series.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class _Series:
    __slots__ = ("counts", "exemplars", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.exemplars: list[Exemplar | None] = [None] * size
        self.total = 0.0


class ServerDurations:
    """`http_server_request_duration_seconds{http_request_method, http_route,
    http_response_status_code, traffic, version}`: the RED histogram, as a collector.

    prometheus_client's `Histogram` takes a lock twice per observation (sum and bucket) and
    its `labels()` lookup costs more than that; this histogram is observed once per request,
    by the edge layer on the event loop, its only writer. So it keeps plain counts per label
    set (`bisect` into the bounds) and builds the family at scrape time, exemplars included;
    the exposition is prometheus_client's. A scrape from another thread reads ints and floats,
    each read atomic; `_count` is the last cumulative bucket, so count and buckets agree.
    `version` is the process's: one value per collector, added at scrape time, free per request.
    """

    name = "http_server_request_duration_seconds"
    documentation = "Duration of HTTP server requests."
    labels = (
        "http_request_method",
        "http_route",
        "http_response_status_code",
        "traffic",
        "version",
    )

    def __init__(
        self, buckets: tuple[float, ...] = LATENCY_BUCKETS, *, version: str = "unknown"
    ) -> None:
        self.version = version
        self._bounds = buckets
        # `le` spelled as prometheus_client's Histogram spells it (its helper is untyped).
        les: list[str] = [floatToGoString(b) for b in buckets]  # type: ignore[no-untyped-call]
        self._les = [*les, "+Inf"]
        self._series: dict[tuple[str, str, int, bool], _Series] = {}

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        shadow: bool,
        seconds: float,
        trace_id: str | None = None,
    ) -> None:
        """Count one answer; `trace_id` (of a sampled trace) becomes its bucket's exemplar."""
        key = (method, route, status, shadow)
        series = self._series.get(key)
        if series is None:
            if method not in KNOWN_METHODS:
                key = ("_OTHER", route, status, shadow)
                series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(self._les))
        index = bisect_left(self._bounds, seconds)  # the first bound >= seconds: `le`
        series.counts[index] += 1
        series.total += seconds
        if trace_id is not None:
            series.exemplars[index] = Exemplar({"trace_id": trace_id}, seconds, time.time())

    def describe(self) -> Iterator[Metric]:
        """The family without samples (the registry checks names when registering)."""
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        """Cumulative buckets per label set, read at scrape time."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for (method, route, status, shadow), series in list(self._series.items()):
            buckets: list[Any] = []
            cumulative = 0
            for le, count, exemplar in zip(self._les, series.counts, series.exemplars, strict=True):
                cumulative += count
                buckets.append((le, cumulative, exemplar) if exemplar else (le, cumulative))
            labels = [method, route, str(status), "shadow" if shadow else "live", self.version]
            family.add_metric(labels, buckets, series.total)
        yield family


class RequestMetrics:
    """RED metrics per route template (never the raw path: bounded cardinality).

    Fed by the kit's edge layer (`servicekit.edge.middleware.EdgeMiddleware`), which times every
    answer: rejections, cached answers and recovered errors included. Requests in flight are a
    plain counter, read at scrape time: a gauge would take its lock twice per request.
    """

    __slots__ = ("in_flight", "observe")

    def __init__(self, metrics: Metrics) -> None:
        self.observe = metrics.request_duration.observe
        self.in_flight = 0
        metrics.active_requests.set_function(lambda: self.in_flight)
