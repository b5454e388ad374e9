"""The knee detector on synthetic curves, and the search that steps towards the knee."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from loadtest.knee import Point, Slo, find_knee, next_rate

SLO = Slo(p99_ms=500.0, failure_budget=0.01)
RATES = [25.0 * 2**i for i in range(7)]  # 25 .. 1600


def curve(
    goodput: Callable[[float], float],
    p99: Callable[[float], float] = lambda _: 40.0,
    failures: Callable[[float], float] = lambda _: 0.0,
    rates: list[float] = RATES,
) -> list[Point]:
    return [Point(r, goodput(r), p99(r), failures(r)) for r in rates]


def search(measure: Callable[[float], Point]) -> list[Point]:
    """Run the step search against a simulated stack, as `make capacity` does."""
    points: list[Point] = []
    while (rate := next_rate(points, SLO, start=25.0, factor=2.0)) is not None:
        points.append(measure(rate))
        assert len(points) < 20
    return points


def test_linear_then_flat_knee_where_goodput_stops_rising() -> None:
    # Capacity 300/s: beyond it the extra load is dropped, goodput stays at 300.
    knee = find_knee(curve(lambda r: min(r, 300.0), failures=lambda r: max(0.0, r - 300.0)), SLO)
    assert knee.reached
    assert (knee.sustainable, knee.saturated_at) == (200.0, 400.0)
    assert "goodput" in knee.reasons and "failures" in knee.reasons


def test_goodput_alone_reveals_the_flat_part() -> None:
    # Neither slow nor failing (a queue answered within the SLO), yet nothing more gets done.
    knee = find_knee(curve(lambda r: min(r, 300.0)), SLO)
    assert (knee.sustainable, knee.saturated_at, knee.reasons) == (200.0, 400.0, ("goodput",))


def test_latency_cliff_is_a_knee_even_while_goodput_rises() -> None:
    knee = find_knee(curve(lambda r: r, p99=lambda r: 60.0 if r < 700 else 2500.0), SLO)
    assert (knee.sustainable, knee.saturated_at, knee.reasons) == (400.0, 800.0, ("p99",))


def test_noisy_curve_finds_the_real_knee_not_the_noise() -> None:
    rng = random.Random(7)

    def goodput(r: float) -> float:
        return min(r, 500.0) * rng.uniform(0.97, 1.0)

    def p99(r: float) -> float:
        return rng.uniform(30, 300) if r <= 500 else rng.uniform(900, 3000)

    for _ in range(20):  # twenty noisy draws of the same stack: never a knee before 500/s
        knee = find_knee(curve(goodput, p99), SLO)
        assert (knee.sustainable, knee.saturated_at) == (400.0, 800.0)


def test_never_saturating_is_not_reached_never_an_invented_knee() -> None:
    knee = find_knee(curve(lambda r: r * 0.99, lambda r: 20 + r / 100), SLO)
    assert not knee.reached
    assert knee.sustainable == 1600.0 and knee.saturated_at is None
    assert "not reached" in knee.describe()


def test_failures_over_budget_saturate() -> None:
    knee = find_knee(curve(lambda r: r, failures=lambda r: 0.02 * r if r > 150 else 0.0), SLO)
    assert (knee.sustainable, knee.saturated_at, knee.reasons) == (100.0, 200.0, ("failures",))


def test_no_answer_served_is_saturated() -> None:
    knee = find_knee([Point(50, 50, 30, 0), Point(100, 0, None, 100)], SLO)
    assert knee.saturated_at == 100 and "p99" in knee.reasons


def test_saturated_from_the_first_step_has_no_sustained_rate() -> None:
    knee = find_knee([Point(25, 5, 4000, 20)], SLO)
    assert knee.reached and knee.sustainable is None
    assert "below the lowest step" in knee.describe()


def test_order_of_the_points_does_not_matter() -> None:
    points = curve(lambda r: min(r, 300.0))
    assert find_knee(points[::-1], SLO) == find_knee(points, SLO)


@pytest.mark.parametrize("capacity", [90.0, 300.0, 1000.0])
def test_search_climbs_geometrically_then_bisects_near_the_knee(capacity: float) -> None:
    def measure(rate: float) -> Point:
        served = min(rate, capacity)
        return Point(rate, served, 50.0 if rate <= capacity else 3000.0, rate - served)

    points = search(measure)
    knee = find_knee(points, SLO)
    assert knee.reached
    assert knee.sustainable is not None and knee.saturated_at is not None
    assert knee.sustainable <= capacity < knee.saturated_at
    # Climb to the first saturated step, then at most three bisections.
    climb = [p.offered for p in points[: points.index(max(points, key=lambda p: p.offered)) + 1]]
    assert climb == [25.0 * 2**i for i in range(len(climb))]
    assert len(points) - len(climb) <= 3
    assert knee.saturated_at / knee.sustainable < 2.0  # bisection narrowed the doubling


def test_search_goes_below_the_start_when_the_first_step_saturates() -> None:
    points = search(lambda r: Point(r, min(r, 4.0), 50.0 if r <= 4 else 3000.0, max(0, r - 4)))
    assert [p.offered for p in points[:4]] == [25.0, 12.5, 6.25, 3.125]
    knee = find_knee(points, SLO)
    assert knee.sustainable is not None and knee.sustainable <= 4.0 < knee.saturated_at
    # The way down does not use up the bisections: the bracket is narrowed as from above.
    assert knee.saturated_at / knee.sustainable < 1.5


def test_search_gives_up_below_a_sixteenth_of_the_start() -> None:
    points = search(lambda r: Point(r, 0.0, None, r))
    assert [p.offered for p in points] == [25.0, 12.5, 6.25, 3.125, 1.5625]
    assert find_knee(points, SLO).sustainable is None
