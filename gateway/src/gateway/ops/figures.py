"""What the ops page reads from one `/metrics` scrape, and the rates between two scrapes.

A scrape gives cumulative counters (`Figures`); the page shows what happened between two of
them (`Rates`): requests/s, error %, p50/p99 from the histogram buckets' differences (the way
Prometheus' `histogram_quantile` does it), shedding per tier and reason, pool waits.
Only the series the page shows are read (`samples`, a small reader of the text format), so a
scrape costs the gateway little. Probes, `/metrics` and the ops page's own routes are left out
of the RED figures: they are the page looking, not the service working.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")

#: Routes that are not traffic: probes, metrics, the ops page.
NOT_TRAFFIC = ("/healthz", "/readyz", "/metrics", "/ops")
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
#: The series read; every other line is skipped unparsed (a service exposes many more).
READ = (
    "http_server_request_duration_seconds_bucket",
    "http_server_request_duration_seconds_count",
    "http_server_active_requests",
    "servicekit_breaker_state",
    "servicekit_breaker_transitions_total",
    "servicekit_shed_requests_total",
    "servicekit_degraded_mode",
    "servicekit_read_only_mode",
    "servicekit_rate_limit_fallback",
    "db_client_connection_count",
    "db_client_connection_max",
    "db_client_connection_wait_time_seconds_count",
    "db_client_connection_wait_time_seconds_sum",
    "db_client_connection_timeouts_total",
)


@dataclass
class Figures:
    """Cumulative figures of one service at one scrape."""

    requests: float = 0.0
    errors: float = 0.0
    #: Request-duration histogram, all traffic routes merged: {upper bound: cumulative count}.
    buckets: dict[float, float] = field(default_factory=dict)
    in_flight: float = 0.0
    breakers: dict[str, str] = field(default_factory=dict)
    #: {(dependency, from, to): count}
    transitions: dict[tuple[str, str, str], float] = field(default_factory=dict)
    #: {(tier, reason): count}, live and shadow traffic together.
    shed: dict[tuple[str, str], float] = field(default_factory=dict)
    degraded: bool = False
    read_only: bool = False
    rate_limit_fallback: bool = False
    pool_used: float = 0.0
    pool_max: float = 0.0
    pool_waits: float = 0.0
    pool_wait_seconds: float = 0.0
    pool_timeouts: float = 0.0
    has_pool: bool = False


def _add(totals: dict[K, float], key: K, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value


def _is_traffic(route: str) -> bool:
    return not any(route == p or route.startswith(p + "/") for p in NOT_TRAFFIC)


def parse(text: str) -> Figures:
    """The figures of one Prometheus text exposition (unknown families are ignored)."""
    f = Figures()
    for name, labels, value in samples(text):
        if name == "http_server_request_duration_seconds_bucket":
            if _is_traffic(labels.get("http_route", "")):
                _add(f.buckets, float(labels["le"]), value)
        elif name == "http_server_request_duration_seconds_count":
            if _is_traffic(labels.get("http_route", "")):
                f.requests += value
                if labels.get("http_response_status_code", "").startswith("5"):
                    f.errors += value
        elif name == "http_server_active_requests":
            f.in_flight = value
        elif name == "servicekit_breaker_state":
            f.breakers[labels["dependency"]] = BREAKER_STATES.get(int(value), "?")
        elif name == "servicekit_breaker_transitions_total":
            key = (labels["dependency"], labels["from_state"], labels["to_state"])
            _add(f.transitions, key, value)
        elif name == "servicekit_shed_requests_total":
            _add(f.shed, (labels["tier"], labels["reason"]), value)
        elif name == "servicekit_degraded_mode":
            f.degraded = value >= 1
        elif name == "servicekit_read_only_mode":
            f.read_only = value >= 1
        elif name == "servicekit_rate_limit_fallback":
            f.rate_limit_fallback = f.rate_limit_fallback or value >= 1
        elif name == "db_client_connection_count":
            f.has_pool = True
            if labels.get("state") == "used":
                f.pool_used += value
        elif name == "db_client_connection_max":
            f.pool_max += value
        elif name == "db_client_connection_wait_time_seconds_count":
            f.pool_waits += value
        elif name == "db_client_connection_wait_time_seconds_sum":
            f.pool_wait_seconds += value
        elif name == "db_client_connection_timeouts_total":
            f.pool_timeouts += value
    return f


LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r'\\[\\"n]')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the Prometheus text lines whose name is one of READ.

    The text format is line based: `name{label="value",...} value [timestamp]`; comments and
    other series are skipped without being parsed. A line that does not parse is skipped.
    """
    for line in text.splitlines():
        if not line.startswith(READ):
            continue
        brace = line.find("{")
        if brace < 0:
            name, _, rest = line.partition(" ")
            labels: dict[str, str] = {}
        else:
            name, close = line[:brace], line.rfind("}")
            labels = {
                k: ESCAPE.sub(lambda m: _UNESCAPE[m.group()], v) if "\\" in v else v
                for k, v in LABEL.findall(line[brace + 1 : close])
            }
            rest = line[close + 1 :]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if name in READ:
            yield name, labels, value


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile (seconds) of cumulative `buckets`, interpolated within its bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # past the last finite bound: say the bound, not infinity
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class Rates:
    """What happened between two scrapes."""

    rps: float
    error_pct: float
    p50_ms: float | None
    p99_ms: float | None
    #: {(tier, reason): refusals per second}
    shed_per_s: dict[tuple[str, str], float]
    pool_wait_ms: float | None


def rates(before: Figures, after: Figures, seconds: float) -> Rates:
    """Rates over `seconds` from `before` to `after` (a restarted service counts from zero)."""
    seconds = max(seconds, 1e-6)
    restarted = after.requests < before.requests
    base = Figures() if restarted else before
    requests = after.requests - base.requests
    errors = after.errors - base.errors
    window = {le: count - base.buckets.get(le, 0.0) for le, count in after.buckets.items()}
    p50, p99 = quantile(0.5, window), quantile(0.99, window)
    shed = {
        key: max(0.0, count - base.shed.get(key, 0.0)) / seconds
        for key, count in after.shed.items()
    }
    waits = after.pool_waits - base.pool_waits
    waited = after.pool_wait_seconds - base.pool_wait_seconds
    return Rates(
        rps=requests / seconds,
        error_pct=100.0 * errors / requests if requests > 0 else 0.0,
        p50_ms=None if p50 is None else p50 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        shed_per_s=shed,
        pool_wait_ms=1000 * waited / waits if waits > 0 else None,
    )
