"""What an answer means for a load test, and a mergeable tally of answers.

Every answer falls in exactly one outcome:

| outcome    | answers                                                        |
|------------|----------------------------------------------------------------|
| `ok`       | 2xx                                                            |
| `shed`     | 429, and 503 with `Retry-After` (a tier refused on purpose)    |
| `business` | 402 payment declined, 409 out of stock or in flight            |
| `error`    | anything else: other 4xx, 5xx, 503 without `Retry-After`, no answer (0) |

Only `error` is a failure: the Locust journeys mark exactly those as failed, so Locust's own
failure count and the `error` rate agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OK, SHED, BUSINESS, ERROR = "ok", "shed", "business", "error"
OUTCOMES = (OK, SHED, BUSINESS, ERROR)
BUSINESS_STATUSES = frozenset({402, 409})


def classify(status: int, retry_after: bool) -> str:
    """The outcome of an answer with `status` (0: none) that did or did not carry Retry-After."""
    if 200 <= status < 300:
        return OK
    if status == 429 or (status == 503 and retry_after):
        return SHED
    if status in BUSINESS_STATUSES:
        return BUSINESS
    return ERROR


def classify_raw(status: int, head: bytes, body: bytes) -> str:
    """`classify` for a raw HTTP/1.1 answer (`head`: status line and headers, as received)."""
    return classify(status, b"\nretry-after:" in head.lower())


def bucket(ms: float) -> int:
    """Round a latency the way Locust's histograms do: 2 significant digits, at least 1 ms."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    return int(round(ms, -2))


def percentile(histogram: Mapping[int, int], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a {rounded ms: count} histogram; nan when empty."""
    total = sum(histogram.values())
    if not total:
        return math.nan
    rank = max(1, math.ceil(q * total))
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank:
            return float(ms)
    return float(max(histogram))  # pragma: no cover (unreachable: seen reaches total)


@dataclass
class Tally:
    """Answers counted per outcome, with a latency histogram per outcome, and per endpoint.

    Small and mergeable, so Locust workers can ship it to the master with every report.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latency: dict[str, dict[int, int]] = field(default_factory=lambda: {o: {} for o in OUTCOMES})
    #: Answers per endpoint (Locust's `name=`) and outcome.
    endpoints: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, outcome: str, ms: float, endpoint: str | None = None) -> None:
        self.counts[outcome] += 1
        histogram = self.latency[outcome]
        key = bucket(ms)
        histogram[key] = histogram.get(key, 0) + 1
        if endpoint is not None:
            self.endpoints.setdefault(endpoint, dict.fromkeys(OUTCOMES, 0))[outcome] += 1

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add a tally given as `to_dict()` (histogram keys may arrive as strings, from JSON)."""
        for outcome, count in other["counts"].items():
            self.counts[outcome] = self.counts.get(outcome, 0) + int(count)
        for outcome, histogram in other["latency"].items():
            mine = self.latency.setdefault(outcome, {})
            for ms, count in histogram.items():
                key = int(float(ms))
                mine[key] = mine.get(key, 0) + int(count)
        for endpoint, counts in other.get("endpoints", {}).items():
            tallied = self.endpoints.setdefault(endpoint, dict.fromkeys(OUTCOMES, 0))
            for outcome, count in counts.items():
                tallied[outcome] = tallied.get(outcome, 0) + int(count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "latency": {o: dict(h) for o, h in self.latency.items()},
            "endpoints": {e: dict(c) for e, c in self.endpoints.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        tally = cls()
        tally.merge(data)
        return tally

    def take(self) -> dict[str, Any]:
        """This tally as a dict, and start from zero (a worker's report to its master)."""
        data = self.to_dict()
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.latency = {o: {} for o in OUTCOMES}
        self.endpoints = {}
        return data

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def histogram(self, outcomes: Iterable[str]) -> dict[int, int]:
        """The latency histograms of `outcomes` added together."""
        merged: dict[int, int] = {}
        for outcome in outcomes:
            for ms, count in self.latency.get(outcome, {}).items():
                merged[ms] = merged.get(ms, 0) + count
        return merged
