"""Where a load curve bends: the knee of offered load against goodput, latency and failures.

A step is one constant offered rate held for a while (open loop). It is *saturated* when any of
three things holds:

- `p99`: the client-side p99 of the answers not shed is over the SLO;
- `failures`: errors, shed answers and dropped sends together are over the budget
  (a share of what was offered);
- `goodput`: goodput stopped rising, either behind the offer (under `EFFICIENCY` of it) or
  rising by less than `MIN_GAIN` of the extra offered since the step below.

The knee lies between the highest sustained step below the lowest saturated one and that
saturated step. When no step saturated the knee is *not reached*: the highest rate measured
is a lower bound, never a knee. `next_rate` plans the search: geometric steps up to the first
saturated step, then bisection between the two around the knee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Goodput under this share of the offered rate: the stack no longer keeps up.
EFFICIENCY = 0.95
#: Goodput gained per extra request offered, below which goodput has stopped rising.
MIN_GAIN = 0.5
#: Bisection stops once the saturated rate is within this factor of the sustained one.
RESOLUTION = 1.15
#: Steps spent bisecting at most.
MAX_BISECTIONS = 3
#: Steps down from a first step that already saturated, at most (START_RPS / 16).
MAX_DESCENTS = 4


@dataclass(frozen=True)
class Point:
    """One step as the knee detector sees it; rates per second, latency in milliseconds."""

    offered: float
    goodput: float
    p99_ms: float | None
    failures: float  # errors + shed + dropped, per second


@dataclass(frozen=True)
class Slo:
    p99_ms: float
    failure_budget: float  # a share of the offered rate, 0..1


@dataclass(frozen=True)
class Knee:
    """The verdict on a curve: `reached`, the sustained rate, the first saturated one and why."""

    reached: bool
    sustainable: float | None
    saturated_at: float | None
    reasons: tuple[str, ...]

    def describe(self) -> str:
        if not self.reached:
            bound = f"{self.sustainable:.0f}/s" if self.sustainable is not None else "nothing"
            return f"knee not reached: {bound} sustained, the highest rate measured"
        below = "below the lowest step" if self.sustainable is None else f"{self.sustainable:.0f}/s"
        return (
            f"knee between {below} (sustained) and {self.saturated_at:.0f}/s "
            f"({', '.join(self.reasons)})"
        )


def point(step: Mapping[str, Any]) -> Point:
    """A `make capacity` step (see `loadtest.capacity.client_summary`) as a point of its curve."""
    return Point(step["offered"], step["goodput"], step["p99_ms"], step["failures"])


def saturation(point: Point, below: Point | None, slo: Slo) -> tuple[str, ...]:
    """Why `point` is saturated (empty when it is not); `below` is the sustained step under it."""
    reasons = []
    if point.p99_ms is None or point.p99_ms > slo.p99_ms:
        reasons.append("p99")
    if point.failures > slo.failure_budget * point.offered:
        reasons.append("failures")
    stalled = point.goodput < EFFICIENCY * point.offered
    if below is not None and point.offered > below.offered:
        gain = (point.goodput - below.goodput) / (point.offered - below.offered)
        stalled = stalled or gain < MIN_GAIN
    if stalled:
        reasons.append("goodput")
    return tuple(reasons)


def find_knee(points: Sequence[Point], slo: Slo) -> Knee:
    """The knee of `points` (any order; bisection steps included)."""
    below: Point | None = None
    for point in sorted(points, key=lambda p: p.offered):
        reasons = saturation(point, below, slo)
        if reasons:
            sustainable = below.offered if below is not None else None
            return Knee(True, sustainable, point.offered, reasons)
        below = point
    return Knee(False, below.offered if below is not None else None, None, ())


def next_rate(points: Sequence[Point], slo: Slo, *, start: float, factor: float) -> float | None:
    """The rate to offer next, or None when the knee is located well enough."""
    if not points:
        return start
    knee = find_knee(points, slo)
    if not knee.reached:
        return max(p.offered for p in points) * factor
    assert knee.saturated_at is not None
    low = knee.sustainable
    high = knee.saturated_at
    # The climb is the rising run of steps from the start; a descent is a step below every
    # earlier one (the first step already saturated); every other step bisected.
    climbing = descents = 0
    lowest = highest = points[0].offered
    for number, p in enumerate(points):
        if number == climbing and (number == 0 or p.offered > highest):
            climbing += 1
        elif p.offered < lowest:
            descents += 1
        lowest, highest = min(lowest, p.offered), max(highest, p.offered)
    if low is None:
        below = high / factor
        return below if below >= 1 and descents < MAX_DESCENTS else None
    if len(points) - climbing - descents >= MAX_BISECTIONS or high / low <= RESOLUTION:
        return None
    return math.sqrt(low * high)
