"""The adaptive concurrency limit's arithmetic (gradient), on a fake clock."""

from __future__ import annotations

import pytest
from servicekit.admission.adaptive import GradientLimit
from servicekit.admission.limiter import ConcurrencyLimiter
from servicekit.testing import FakeClock

WINDOW = 0.25


def feed(limit: GradientLimit, clock: FakeClock, rtt: float, in_flight: int, n: int = 10) -> bool:
    """One window of `n` requests of `rtt` seconds; True if it updated the limit."""
    updated = False
    for i in range(n):
        if i == n - 1:
            clock.advance(WINDOW)
        updated = limit.sample(rtt, in_flight, clock()) or updated
    return updated


def warmed(clock: FakeClock, rtt: float = 0.010, **kwargs: int) -> GradientLimit:
    limit = GradientLimit(200, window=WINDOW, **kwargs)
    limit.sample(rtt, 0, clock())  # opens the first window
    for _ in range(10):
        feed(limit, clock, rtt, in_flight=0)  # idle: the long average learns, the limit stays
    assert limit.limit == 20
    assert limit.long_rtt == pytest.approx(rtt)
    return limit


def test_grows_by_the_queue_allowance_while_latency_holds(fake_clock: FakeClock) -> None:
    limit = warmed(fake_clock)
    assert feed(limit, fake_clock, 0.010, in_flight=20)
    # gradient 1: estimate 20 + 4 = 24, smoothed: 20 x 0.8 + 24 x 0.2 = 20.8
    assert limit.estimate == pytest.approx(20.8)
    feed(limit, fake_clock, 0.010, in_flight=20)
    assert limit.estimate == pytest.approx(21.6)
    assert limit.limit == 21


def test_shrinks_when_latency_rises_at_most_by_half(fake_clock: FakeClock) -> None:
    limit = warmed(fake_clock)
    feed(limit, fake_clock, 0.020, in_flight=20)
    # gradient 0.01 / ~0.02 ~ 0.5: 20 x 0.8 + (20 x g + 4) x 0.2
    gradient = limit.long_rtt / 0.020
    assert 0.5 <= gradient < 0.51
    assert limit.estimate == pytest.approx(20 * 0.8 + (20 * gradient + 4) * 0.2)
    before = limit.estimate
    feed(limit, fake_clock, 1.0, in_flight=20)  # a far slower window: clamped at 0.5
    assert limit.estimate == pytest.approx(before * 0.8 + (before * 0.5 + 4) * 0.2)


def test_does_not_grow_while_app_limited(fake_clock: FakeClock) -> None:
    limit = warmed(fake_clock)
    assert feed(limit, fake_clock, 0.001, in_flight=9)  # under half the limit in flight
    assert limit.estimate == 20


def test_stays_within_floor_and_ceiling(fake_clock: FakeClock) -> None:
    limit = warmed(fake_clock, min_limit=12)
    for _ in range(40):
        feed(limit, fake_clock, 5.0, in_flight=200)
    assert limit.limit == 12
    small = GradientLimit(22, window=WINDOW)
    small.sample(0.01, 0, fake_clock())
    for _ in range(40):
        feed(small, fake_clock, 0.01, in_flight=22)
    assert small.limit == 22


def test_a_window_needs_time_and_enough_samples(fake_clock: FakeClock) -> None:
    limit = warmed(fake_clock)
    assert not feed(limit, fake_clock, 0.010, in_flight=20, n=9)  # too few: window dropped
    assert limit.estimate == 20
    for _ in range(50):
        assert not limit.sample(0.010, 20, fake_clock())  # many, but the window is still open
    fake_clock.advance(WINDOW)
    assert limit.sample(0.010, 20, fake_clock())


def test_long_average_drops_fast_after_an_overload(fake_clock: FakeClock) -> None:
    limit = warmed(fake_clock, rtt=0.100)
    feed(limit, fake_clock, 0.010, in_flight=0)
    # long ~0.1 is over twice short: cut by a tenth at once, besides its slow average
    factor = 2 / 601
    assert limit.long_rtt == pytest.approx((0.100 * (1 - factor) + 0.010 * factor) * 0.9)


def test_limiter_follows_the_adaptive_limit_under_its_ceiling(fake_clock: FakeClock) -> None:
    adaptive = GradientLimit(30, initial=10, window=WINDOW)
    limiter = ConcurrencyLimiter(30, degrade_at=0.5, adaptive=adaptive, clock=fake_clock)
    assert (limiter.limit, limiter.ceiling, limiter.degrade_threshold) == (10, 30, 5)
    for _ in range(40):  # 4 windows of 9 rounds
        started = fake_clock()
        assert all(limiter.try_acquire() is None for _ in range(10))
        fake_clock.advance(WINDOW / 9)
        for _ in range(10):
            limiter.release(started)
    assert limiter.limit == adaptive.limit > 10
    assert limiter.degrade_threshold == -(-limiter.limit // 2)
    assert limiter.in_flight == 0
