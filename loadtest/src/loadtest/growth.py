"""Growth planning from the metrics of a running system: weekly growth, unit costs, the knee's date.

A series is a list of `(epoch seconds, value)`; gaps (missing points, None, NaN) are allowed.
Growth is fitted as exponential, `rate = level * (1 + weekly) ** weeks`, by the Theil-Sen
estimator on the logarithm of the rate: the median of the slopes between every pair of points,
so noise, a daily cycle, outliers and holes move it little. Its 95 % interval comes with it.

The seed's three-band rule, on the weekly growth rate:

| weekly growth | action |
|---|---|
| > 15 % | scale now |
| 5 % - 15 % | plan next week's resources |
| < 5 % | hold |

Less than `MIN_HISTORY` of data gives no growth rate (a week's trend is not read from an
afternoon); unit costs are still computed.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WEEK = 7 * 86400.0
MIN_HISTORY = 2 * 86400.0
SCALE_NOW = 0.15
PLAN_NEXT_WEEK = 0.05
Series = Sequence[tuple[float, float | None]]


def clean(series: Series) -> list[tuple[float, float]]:
    """The points that carry a finite value, in time order."""
    return sorted(
        (float(t), float(v))
        for t, v in series
        if v is not None and math.isfinite(float(v)) and math.isfinite(float(t))
    )


@dataclass(frozen=True)
class Growth:
    weekly: float  # 0.10 = 10 % a week
    low: float  # 95 % interval of `weekly`
    high: float
    level: float  # the fitted rate at the last point
    at: float  # epoch seconds of the last point
    span: float  # seconds between the first and the last point
    points: int

    def rate_at(self, when: float) -> float:
        return float(self.level * (1 + self.weekly) ** ((when - self.at) / WEEK))


def weekly_growth(series: Series, *, min_history: float = MIN_HISTORY) -> Growth | None:
    """The weekly growth of `series` (a rate), None with too little history."""
    from scipy.stats import theilslopes

    points = [(t, v) for t, v in clean(series) if v > 0]
    if len(points) < 3 or points[-1][0] - points[0][0] < min_history:
        return None
    weeks = [t / WEEK for t, _ in points]
    logs = [math.log(v) for _, v in points]
    slope, intercept, low, high = theilslopes(logs, weeks, alpha=0.95)
    at = points[-1][0]
    return Growth(
        weekly=math.expm1(slope),
        low=math.expm1(low),
        high=math.expm1(high),
        level=math.exp(intercept + slope * at / WEEK),
        at=at,
        span=at - points[0][0],
        points=len(points),
    )


def band(weekly: float | None) -> tuple[str, str]:
    """(band, action) of the three-band rule; ("unknown", ...) without a growth rate."""
    if weekly is None:
        return (
            "unknown",
            f"not enough history for a weekly rate (at least {MIN_HISTORY / 86400:g} days)",
        )
    if weekly > SCALE_NOW:
        return "scale now", f"growth above {SCALE_NOW:.0%} a week: add capacity now"
    if weekly >= PLAN_NEXT_WEEK:
        return "plan", (
            f"growth {PLAN_NEXT_WEEK:.0%}-{SCALE_NOW:.0%} a week: plan next week's resources"
        )
    return "hold", f"growth under {PLAN_NEXT_WEEK:.0%} a week: hold"


def knee_date(growth: Growth, knee: float) -> tuple[str, datetime.datetime | None]:
    """When the fitted traffic reaches `knee` at the current growth: (status, date)."""
    if growth.level >= knee:
        return "reached", datetime.datetime.fromtimestamp(growth.at, datetime.UTC)
    if growth.weekly <= 0:
        return "never", None
    weeks = math.log(knee / growth.level) / math.log1p(growth.weekly)
    when = growth.at + weeks * WEEK
    if when > datetime.datetime.max.replace(tzinfo=datetime.UTC).timestamp():
        return "never", None
    return "ahead", datetime.datetime.fromtimestamp(when, datetime.UTC)


#: Unit costs are read where the denominator is in its top quarter: at low traffic the fixed
#: cost (an idle process's memory, its open connections) would be charged to a few requests.
BUSY_SHARE = 0.25


def ratio_median(numerator: Series, denominator: Series, scale: float = 1000.0) -> float | None:
    """The median of `numerator / denominator * scale` over the timestamps both have, among
    the busiest `BUSY_SHARE` of them (by the denominator)."""
    by_time = {t: v for t, v in clean(denominator) if v > 0}
    shared = sorted((by_time[t], value) for t, value in clean(numerator) if t in by_time)
    busiest = shared[math.floor(len(shared) * (1 - BUSY_SHARE)) :]
    ratios = sorted(value / base * scale for base, value in busiest)
    if not ratios:
        return None
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


#: Unit costs: name -> (series, per series, scale, unit).
COSTS = {
    "memory per 1k rps": ("memory_bytes", "rps", 1000.0, "bytes"),
    "DB connections per 1k rps": ("db_connections", "rps", 1000.0, "connections"),
    "CPU per 1k rps": ("cpu_cores", "rps", 1000.0, "cores"),
    "Redis memory per 1k keys": ("redis_memory_bytes", "redis_keys", 1000.0, "bytes"),
}


def unit_costs(series: Mapping[str, Series]) -> dict[str, dict[str, object]]:
    """Every unit cost the series allow (at the busiest times: `ratio_median`); `value` None,
    with the missing series named, otherwise."""
    costs: dict[str, dict[str, object]] = {}
    for name, (top, bottom, scale, unit) in COSTS.items():
        missing = [s for s in (top, bottom) if not clean(series.get(s, []))]
        value = None if missing else ratio_median(series[top], series[bottom], scale)
        costs[name] = {"value": value, "unit": unit, "missing": missing}
    return costs


def span_text(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"
