"""Server-side numbers of one load step, from each service's `/metrics` and its trace file.

A step reads every service's `/metrics` when it starts and when it ends (counters: their
difference) and once a second in between (gauges: in flight, pool in use), and times a
`/healthz` of each service on the same beat: a trivial route, so its latency is the time a
request waits for the event loop (event-loop lag as a client sees it). Statement latency comes
from the statement spans in `.run/traces/<service>.jsonl` when the stack is local
(`make up` traces every request).

Figures per service and step (`Window.summary`): `rate` (requests/s, probes left out),
`mean_s` (mean server time), `in_flight_mean`/`in_flight_max`, `concurrency_limit`,
`cpu_cores`, `rss_bytes`, `pool_used_max`, `pool_max`, `pool_wait_p95_s`, `pool_timeouts`,
`loop_lag_p95_s`, `shed`, `breaker_rejected`, `breaker_open`, and from traces `statements`,
`statement_p95_s`, `statement_concurrency` (mean statements running at once: L = lambda W).
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

POOL_WAIT = "db_client_connection_wait_time_seconds"
#: Fewer observations than this in a step give no percentile (pool wait, statement latency).
MIN_SAMPLES = 20
PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of `name` over the series whose labels include `match`."""
    wanted = set(match.items())
    return sum(v for (n, labels), v in samples.items() if n == name and wanted <= labels)


def _requests(samples: Samples, suffix: str) -> float:
    name = f"http_server_request_duration_seconds_{suffix}"
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and dict(labels).get("http_route") not in PROBE_ROUTES
    )


def bucket_quantile(
    before: Samples, after: Samples, name: str, q: float, least: int = 1
) -> float | None:
    """The q-quantile of a histogram's observations between two scrapes (Prometheus' way).

    None with fewer than `least` observations: a p95 of five is noise.
    """
    counts: dict[float, float] = defaultdict(float)
    for (n, labels), value in after.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            counts[le] += value - before.get((n, labels), 0.0)
    bounds = sorted(counts)
    if not bounds or counts[bounds[-1]] < max(1, least):
        return None
    rank = q * counts[bounds[-1]]
    lower, seen = 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = counts[bound] - seen
            return lower + (bound - lower) * ((rank - seen) / inside if inside else 1.0)
        lower, seen = bound, counts[bound]
    return lower  # pragma: no cover (the last bucket holds every observation)


def fetch(url: str, timeout: float = 5.0) -> tuple[str, float]:
    """The body of `url` and the seconds it took; OSError when unreachable (runs in a thread)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (http URLs we build)
        body = answer.read().decode()
    return body, time.perf_counter() - started


def percentile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Window:
    """What one service showed during one step."""

    first: Samples = field(default_factory=dict)
    last: Samples = field(default_factory=dict)
    gauges: list[Samples] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    statements: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)

    def summary(self, seconds: float) -> dict[str, Any]:
        first, last = self.first, self.last
        answered = _requests(last, "count") - _requests(first, "count")
        busy = _requests(last, "sum") - _requests(first, "sum")
        in_flight = [max(0.0, total(g, "http_server_active_requests") - 1) for g in self.gauges]
        used = [total(g, "db_client_connection_count", state="used") for g in self.gauges]
        cpu = "process_cpu_seconds_total"
        cpu_delta = total(last, cpu) - total(first, cpu)
        durations = [d for _, d in self.statements]
        breaker_open = any(v >= 2 for (n, _), v in last.items() if n == "servicekit_breaker_state")
        return {
            "rate": answered / seconds,
            "mean_s": busy / answered if answered else None,
            "in_flight_mean": sum(in_flight) / len(in_flight) if in_flight else None,
            "in_flight_max": max(in_flight, default=None),
            "concurrency_limit": total(last, "servicekit_concurrency_limit") or None,
            "cpu_cores": cpu_delta / seconds if _has(last, "process_cpu_seconds_total") else None,
            "rss_bytes": total(last, "process_resident_memory_bytes") or None,
            "pool_used_max": max(used)
            if used and _has(last, "db_client_connection_count")
            else None,
            "pool_max": total(last, "db_client_connection_max") or None,
            "pool_wait_p95_s": bucket_quantile(first, last, POOL_WAIT, 0.95, MIN_SAMPLES),
            "pool_timeouts": total(last, "db_client_connection_timeouts_total")
            - total(first, "db_client_connection_timeouts_total"),
            "loop_lag_p95_s": percentile(self.lags, 0.95),
            "shed": total(last, "servicekit_shed_requests_total")
            - total(first, "servicekit_shed_requests_total"),
            "breaker_rejected": total(last, "servicekit_breaker_calls_total", outcome="rejected")
            - total(first, "servicekit_breaker_calls_total", outcome="rejected"),
            "breaker_open": breaker_open,
            "statements": len(durations) if self.statements else None,
            "statement_p95_s": percentile(durations, 0.95)
            if len(durations) >= MIN_SAMPLES
            else None,
            "statement_concurrency": sum(durations) / seconds if self.statements else None,
        }


def _has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


# --- statement spans --------------------------------------------------------------------------


def trace_offsets(folder: Path, services: Iterable[str]) -> dict[str, int]:
    """Where each service's trace file ends now: statements are read from there on."""
    offsets = {}
    for name in services:
        path = folder / f"{name}.jsonl"
        offsets[name] = path.stat().st_size if path.exists() else 0
    return offsets


def read_statements(
    folder: Path, offsets: Mapping[str, int]
) -> dict[str, list[tuple[float, float]]]:
    """Per service, (start epoch seconds, duration seconds) of every statement span since."""
    found: dict[str, list[tuple[float, float]]] = {}
    for name, offset in offsets.items():
        path = folder / f"{name}.jsonl"
        spans: list[tuple[float, float]] = []
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if b'"db.system.name"' not in line:
                        continue  # most spans are not statements: skip them unparsed
                    try:
                        span = json.loads(line)
                        start = span["start_time_unix_nano"] / 1e9
                        spans.append((start, span["end_time_unix_nano"] / 1e9 - start))
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut by a file still being written
        found[name] = spans
    return found
