"""How `make canary` judges a canary against its stable twin over the same window.

Each check says `pass`, `fail`, or `not enough traffic`; a step passes only when every check
passes. The checks (thresholds are the `Thresholds` fields):

- **errors**: 5xx share, canary vs stable, Fisher's exact test, one-sided (is the canary worse?).
  It fails when the difference is significant (p < alpha) *and* large enough to matter
  (at least `min_error_increase`, absolute): a canary at 0.4 % against 0.1 % over thousands of
  calls is significant but not a reason to stop a release.
- **latency**: Mann-Whitney U, one-sided, on the per-request latencies, plus the p99: it fails
  when the canary is significantly slower *and* its p99 exceeds the stable p99 by
  `p99_ratio` and `p99_margin_ms` together.
- **gc**: Python GC collections per request (all generations): a canary that allocates much
  more per request collects more often. Fails above `gc_ratio` x stable + `gc_margin`.
- **memory**: resident set; fails above `rss_ratio` x stable + `rss_margin_mb`.
- **saturation**: requests in flight against the process's concurrency limit: a canary that
  reached `saturation_share` of it is queueing (degraded mode starts at 80 %).

Each test needs `min_requests` on both sides; fewer is `not enough traffic`, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def warm_up() -> None:
    """Import scipy's tests now: about 2 s, paid before the first step instead of inside the
    first judgement, and not at all by a command that stops at a bad knob."""
    import scipy.stats  # noqa: F401


PASS, FAIL, NOT_ENOUGH = "pass", "fail", "not enough traffic"


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 20
    #: Fisher's test is exact at any sample size: an early look needs fewer requests.
    min_early_requests: int = 10
    alpha: float = 0.01
    #: Stricter alpha for the looks taken before a step ends (several looks per step).
    early_alpha: float = 0.001
    min_error_increase: float = 0.02
    p99_ratio: float = 1.25
    p99_margin_ms: float = 25.0
    gc_ratio: float = 3.0
    #: Collections per request; a handler that allocates much more adds several per request.
    gc_margin: float = 0.5
    rss_ratio: float = 2.0
    rss_margin_mb: float = 100.0
    saturation_share: float = 0.8


@dataclass
class Side:
    """What one side (canary or stable) did in the window."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    gc_collections: float = 0.0
    rss_bytes: float = 0.0
    max_in_flight: float = 0.0
    concurrency_limit: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    detail: str
    figures: dict[str, Any]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan without values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _enough(canary: Side, stable: Side, limits: Thresholds, minimum: int | None = None) -> bool:
    needed = limits.min_requests if minimum is None else minimum
    return min(canary.requests, stable.requests) >= needed


def compare_errors(
    canary: Side,
    stable: Side,
    limits: Thresholds,
    alpha: float | None = None,
    minimum: int | None = None,
) -> Check:
    """Fisher's exact test on the 5xx counts (one-sided: the canary fails more)."""
    figures: dict[str, Any] = {
        "canary_requests": canary.requests,
        "canary_errors": canary.errors,
        "stable_requests": stable.requests,
        "stable_errors": stable.errors,
    }
    if not _enough(canary, stable, limits, minimum):
        return Check("errors", NOT_ENOUGH, f"fewer than {limits.min_requests} requests", figures)
    table = [
        [canary.errors, canary.requests - canary.errors],
        [stable.errors, stable.requests - stable.errors],
    ]
    from scipy.stats import fisher_exact  # imported by warm_up already

    p_value = float(fisher_exact(table, alternative="greater").pvalue)
    increase = canary.error_rate - stable.error_rate
    figures |= {"p_value": p_value, "increase": increase}
    worse = p_value < (limits.alpha if alpha is None else alpha)
    failed = worse and increase >= limits.min_error_increase
    detail = (
        f"canary {canary.error_rate:.1%} vs stable {stable.error_rate:.1%} 5xx, "
        f"Fisher p={p_value:.2g}"
    )
    return Check("errors", FAIL if failed else PASS, detail, figures)


def compare_latency(
    canary: Side, stable: Side, limits: Thresholds, alpha: float | None = None
) -> Check:
    """Mann-Whitney U (one-sided: the canary is slower) and the p99s."""
    p99_canary, p99_stable = canary.percentile(99), stable.percentile(99)
    figures: dict[str, Any] = {
        "canary_p50_ms": canary.percentile(50),
        "stable_p50_ms": stable.percentile(50),
        "canary_p99_ms": p99_canary,
        "stable_p99_ms": p99_stable,
    }
    if not _enough(canary, stable, limits):
        return Check("latency", NOT_ENOUGH, f"fewer than {limits.min_requests} requests", figures)
    from scipy.stats import mannwhitneyu  # imported by warm_up already

    p_value = float(
        mannwhitneyu(canary.latencies_ms, stable.latencies_ms, alternative="greater").pvalue
    )
    figures["p_value"] = p_value
    bound = p99_stable * limits.p99_ratio + limits.p99_margin_ms
    slower = p_value < (limits.alpha if alpha is None else alpha)
    failed = slower and p99_canary > bound
    detail = (
        f"p99 canary {p99_canary:.1f} ms vs stable {p99_stable:.1f} ms "
        f"(limit {bound:.1f}), Mann-Whitney p={p_value:.2g}"
    )
    return Check("latency", FAIL if failed else PASS, detail, figures)


def compare_runtime(canary: Side, stable: Side, limits: Thresholds) -> list[Check]:
    """GC collections per request, resident memory, saturation."""
    checks = []
    if _enough(canary, stable, limits):
        gc_canary = canary.gc_collections / canary.requests
        gc_stable = stable.gc_collections / stable.requests
        bound = gc_stable * limits.gc_ratio + limits.gc_margin
        checks.append(
            Check(
                "gc",
                FAIL if gc_canary > bound else PASS,
                f"GC collections/request canary {gc_canary:.3f} vs stable {gc_stable:.3f}",
                {"canary_gc_per_request": gc_canary, "stable_gc_per_request": gc_stable},
            )
        )
    else:
        checks.append(Check("gc", NOT_ENOUGH, "too few requests", {}))
    mb = 1024 * 1024
    rss_bound = stable.rss_bytes * limits.rss_ratio + limits.rss_margin_mb * mb
    checks.append(
        Check(
            "memory",
            FAIL if stable.rss_bytes and canary.rss_bytes > rss_bound else PASS,
            f"RSS canary {canary.rss_bytes / mb:.0f} MiB vs stable {stable.rss_bytes / mb:.0f} MiB",
            {"canary_rss_bytes": canary.rss_bytes, "stable_rss_bytes": stable.rss_bytes},
        )
    )
    limit = canary.concurrency_limit
    saturated = limit > 0 and canary.max_in_flight >= limit * limits.saturation_share
    checks.append(
        Check(
            "saturation",
            FAIL if saturated else PASS,
            f"in flight max canary {canary.max_in_flight:.0f} vs stable "
            f"{stable.max_in_flight:.0f} (limit {limit:.0f})",
            {
                "canary_max_in_flight": canary.max_in_flight,
                "stable_max_in_flight": stable.max_in_flight,
            },
        )
    )
    return checks


def judge(canary: Side, stable: Side, limits: Thresholds) -> tuple[str, list[Check]]:
    """The step's verdict: `fail` if any check fails, else `not enough traffic` if any
    check lacks data, else `pass`."""
    checks = [
        compare_errors(canary, stable, limits),
        compare_latency(canary, stable, limits),
        *compare_runtime(canary, stable, limits),
    ]
    verdicts = {c.verdict for c in checks}
    if FAIL in verdicts:
        return FAIL, checks
    if NOT_ENOUGH in verdicts:
        return NOT_ENOUGH, checks
    return PASS, checks


def early_failure(canary: Side, stable: Side, limits: Thresholds) -> Check | None:
    """A failing error or latency check at the stricter early alpha, before the step ends."""
    for check in (
        compare_errors(
            canary, stable, limits, alpha=limits.early_alpha, minimum=limits.min_early_requests
        ),
        compare_latency(canary, stable, limits, alpha=limits.early_alpha),
    ):
        if check.verdict == FAIL:
            return check
    return None
