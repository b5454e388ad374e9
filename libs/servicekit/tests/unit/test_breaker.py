"""AsyncCircuitBreaker: trip conditions, open/half-open/closed, and the gap in pybreaker it fills.

Time is a `FakeClock`: the breaker is driven through every state without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pybreaker
import pytest
from servicekit import AsyncCircuitBreaker, BreakerConfig, CircuitOpenError, Metrics
from servicekit.downstream.breaker import OPEN
from servicekit.testing import FakeClock


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom("downstream failed")


def make(clock: FakeClock, metrics: Metrics | None = None, **config: float) -> AsyncCircuitBreaker:
    # By default only the condition a test is about can trip the breaker.
    values: dict[str, float] = {
        "failure_rate": 100,
        "min_calls": 10_000,
        "consecutive_failures": 10_000,
        "reset_seconds": 10,
        "half_open_probes": 2,
        **config,
    }
    return AsyncCircuitBreaker(
        "payment",
        BreakerConfig(**values),  # type: ignore[arg-type]
        clock=clock,
        metrics=metrics,
    )


async def trip(breaker: AsyncCircuitBreaker) -> None:
    while breaker.current_state == "closed":
        with pytest.raises(Boom):
            await breaker.call_async(fail)


# --- the gap in pybreaker ---------------------------------------------------------------------


async def test_pybreaker_sync_call_does_not_count_an_awaited_failure() -> None:
    stock = pybreaker.CircuitBreaker(fail_max=1)
    # call() returns the coroutine without running it and records a success right away...
    coroutine = stock.call(fail)
    with pytest.raises(Boom):
        await coroutine
    # ...so the failure that happened when it was awaited is lost.
    assert stock.current_state == "closed" and stock.fail_counter == 0


def test_pybreaker_call_async_needs_tornado() -> None:
    # Without Tornado its asyncio-less coroutine path cannot even start (`gen` is undefined).
    stock = pybreaker.CircuitBreaker()
    with pytest.raises(NameError):
        stock.call_async(ok)


async def test_ours_counts_an_awaited_failure(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, consecutive_failures=1)
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    assert breaker.current_state == "open"


async def test_counts_a_timeout_as_a_failure(fake_clock: FakeClock) -> None:
    async def timed_out() -> None:
        async with asyncio.timeout(0):
            await asyncio.Event().wait()

    breaker = make(fake_clock, consecutive_failures=1)
    with pytest.raises(TimeoutError):
        await breaker.call_async(timed_out)
    assert breaker.current_state == "open"


async def test_holds_no_lock_while_the_call_is_awaited(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock)
    inside = 0
    both_inside = asyncio.Event()
    lock_free_meanwhile: list[bool] = []

    async def call() -> None:
        nonlocal inside
        inside += 1
        if inside == 2:
            both_inside.set()
        await both_inside.wait()

    def try_lock() -> None:
        acquired = breaker._lock.acquire(blocking=False)
        lock_free_meanwhile.append(acquired)
        if acquired:
            breaker._lock.release()

    tasks = [asyncio.create_task(breaker.call_async(call)) for _ in range(2)]
    await asyncio.wait_for(both_inside.wait(), 5)
    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
    await asyncio.gather(*tasks)
    # Both calls were in flight together, and another thread could take the lock meanwhile.
    assert inside == 2 and lock_free_meanwhile == [True]


def test_refuses_pybreakers_sync_path(fake_clock: FakeClock) -> None:
    with pytest.raises(TypeError, match="call_async"):
        make(fake_clock).call(lambda: None)


# --- trip conditions --------------------------------------------------------------------------


async def test_seed_example_five_percent_errors_over_thirty_seconds(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, failure_rate=5, min_calls=20, window_seconds=30)
    for _ in range(19):
        await breaker.call_async(ok)
        fake_clock.advance(1)
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    # 1 failure in 20 calls within 30 s is 5%.
    assert breaker.current_state == "open"
    assert breaker.last_transition is not None
    assert breaker.last_transition.reason == "failure_rate"
    assert breaker.last_transition.failure_rate == 5.0


async def test_failure_rate_waits_for_min_calls(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, failure_rate=5, min_calls=20)
    for _ in range(5):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    assert breaker.current_state == "closed"
    assert breaker.rates() == (100.0, 0.0)


async def test_failures_older_than_the_window_do_not_count(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, failure_rate=50, min_calls=20, window_seconds=30)
    for _ in range(15):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    fake_clock.advance(31)
    for _ in range(20):
        await breaker.call_async(ok)
    assert breaker.current_state == "closed"
    assert breaker.rates() == (0.0, 0.0)


async def test_slow_call_rate_trips(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, min_calls=4, slow_call_seconds=1, slow_call_rate=50)

    async def slow() -> str:
        fake_clock.advance(1.5)
        return "late"

    await breaker.call_async(ok)
    await breaker.call_async(slow)
    await breaker.call_async(ok)
    assert breaker.current_state == "closed"
    await breaker.call_async(slow)
    assert breaker.current_state == "open"
    assert breaker.last_transition is not None
    assert breaker.last_transition.reason == "slow_call_rate"
    assert breaker.last_transition.slow_call_rate == 50.0


async def test_consecutive_failures_trip_and_a_success_resets_them(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, consecutive_failures=3)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    await breaker.call_async(ok)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_async(fail)
    assert breaker.current_state == "closed"
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    assert breaker.current_state == "open"
    assert breaker.last_transition is not None
    assert breaker.last_transition.reason == "consecutive_failures"


async def test_excluded_exceptions_are_not_failures(fake_clock: FakeClock) -> None:
    breaker = AsyncCircuitBreaker(
        "inventory", BreakerConfig(consecutive_failures=1), clock=fake_clock, exclude=[Boom]
    )
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    assert breaker.current_state == "closed"


# --- open, half-open, closed ------------------------------------------------------------------


async def test_open_fails_fast_with_503_and_the_time_left_as_retry_after(
    fake_clock: FakeClock,
) -> None:
    breaker = make(fake_clock, consecutive_failures=1, reset_seconds=10)
    await trip(breaker)
    fake_clock.advance(3.5)
    called = False

    async def spy() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitOpenError) as info:
        await breaker.call_async(spy)
    assert not called
    error = info.value
    assert error.status == 503 and error.headers["Retry-After"] == "7"
    body = json.loads(error.to_body())
    assert body["type"] == "/problems/circuit-open" and body["dependency"] == "payment"
    assert breaker.open_remaining() == 6.5


async def test_half_open_admits_bounded_probes_then_closes(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, consecutive_failures=1, reset_seconds=10, half_open_probes=2)
    await trip(breaker)
    fake_clock.advance(10)
    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "ok"

    probes = [asyncio.create_task(breaker.call_async(probe)) for _ in range(2)]
    await asyncio.sleep(0)
    assert breaker.current_state == "half-open"
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call_async(ok)
    assert info.value.headers["Retry-After"] == "1"
    release.set()
    assert await asyncio.gather(*probes) == ["ok", "ok"]
    assert breaker.current_state == "closed"
    assert breaker.last_transition is not None
    assert breaker.last_transition.reason == "probes_succeeded"


async def test_a_failed_probe_opens_it_again_for_a_full_reset(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, consecutive_failures=1, reset_seconds=10)
    await trip(breaker)
    fake_clock.advance(10)
    with pytest.raises(Boom):
        await breaker.call_async(fail)
    assert breaker.current_state == "open"
    assert breaker.last_transition is not None
    assert breaker.last_transition.reason == "probe_failed"
    assert breaker.open_remaining() == 10


@pytest.mark.parametrize(("slow_probes", "state"), [(2, "open"), (1, "closed")])
async def test_slow_probes_open_it_again_at_the_slow_call_rate(
    fake_clock: FakeClock, slow_probes: int, state: str
) -> None:
    breaker = make(
        fake_clock,
        consecutive_failures=1,
        slow_call_seconds=1,
        slow_call_rate=100,
        half_open_probes=2,
    )
    await trip(breaker)
    fake_clock.advance(10)

    async def slow() -> None:
        fake_clock.advance(2)

    await breaker.call_async(slow)
    await breaker.call_async(slow if slow_probes == 2 else ok)
    assert breaker.current_state == state
    assert breaker.last_transition is not None
    expected = "probe_slow" if state == "open" else "probes_succeeded"
    assert breaker.last_transition.reason == expected


async def test_a_cancelled_probe_frees_its_slot(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, consecutive_failures=1, half_open_probes=1)
    await trip(breaker)
    fake_clock.advance(10)
    hung = asyncio.create_task(breaker.call_async(asyncio.Event().wait))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(ok)
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    assert breaker.current_state == "half-open"
    assert await breaker.call_async(ok) == "ok"
    assert breaker.current_state == "closed"


async def test_an_outcome_from_before_a_state_change_is_ignored(fake_clock: FakeClock) -> None:
    breaker = make(fake_clock, consecutive_failures=1)
    release = asyncio.Event()

    async def late() -> str:
        await release.wait()
        return "ok"

    slow_success = asyncio.create_task(breaker.call_async(late))
    await asyncio.sleep(0)
    await trip(breaker)
    release.set()
    await slow_success
    # The success was admitted while closed; it says nothing about the dependency now.
    assert breaker.current_state == "open"


# --- events: metrics and logs -----------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_metrics_exist_from_creation_and_follow_every_change(fake_clock: FakeClock) -> None:
    metrics = Metrics("order")
    breaker = make(fake_clock, metrics, consecutive_failures=1, half_open_probes=1)
    dep = {"dependency": "payment"}
    assert sample(metrics, "servicekit_breaker_state", **dep) == 0
    for outcome in ("success", "failure", "slow", "rejected"):
        assert sample(metrics, "servicekit_breaker_calls_total", **dep, outcome=outcome) == 0
    assert (
        sample(
            metrics,
            "servicekit_breaker_transitions_total",
            **dep,
            from_state="closed",
            to_state="open",
        )
        == 0
    )

    await trip(breaker)
    assert sample(metrics, "servicekit_breaker_state", **dep) == 2
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(ok)
    fake_clock.advance(10)
    await breaker.call_async(ok)

    assert sample(metrics, "servicekit_breaker_state", **dep) == 0
    calls = "servicekit_breaker_calls_total"
    assert sample(metrics, calls, **dep, outcome="failure") == 1
    assert sample(metrics, calls, **dep, outcome="rejected") == 1
    assert sample(metrics, calls, **dep, outcome="success") == 1
    moves = [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    for from_state, to_state in moves:
        value = sample(
            metrics,
            "servicekit_breaker_transitions_total",
            **dep,
            from_state=from_state,
            to_state=to_state,
        )
        assert value == 1, (from_state, to_state)


async def test_every_state_change_is_logged_with_its_reason_and_rates(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make(fake_clock, consecutive_failures=2)
    with caplog.at_level(logging.INFO, logger="servicekit.downstream.breaker"):
        await trip(breaker)
        fake_clock.advance(10)
        await breaker.call_async(ok)
    changes = [r for r in caplog.records if getattr(r, "event", None) == "breaker_state_change"]
    assert [(r.from_state, r.to_state) for r in changes] == [  # type: ignore[attr-defined]
        ("closed", "open"),
        ("open", "half-open"),
    ]
    opened = changes[0]
    assert opened.levelno == logging.WARNING
    assert opened.dependency == "payment"  # type: ignore[attr-defined]
    assert opened.reason == "consecutive_failures"  # type: ignore[attr-defined]
    assert opened.failure_rate == 100.0  # type: ignore[attr-defined]


def test_check_refuses_while_open_and_admits_nothing(fake_clock: FakeClock) -> None:
    metrics = Metrics("order")
    breaker = AsyncCircuitBreaker(
        "payment", BreakerConfig(reset_seconds=10), clock=fake_clock, metrics=metrics
    )
    breaker.check()  # closed: nothing happens
    breaker.open()
    fake_clock.advance(4)
    with pytest.raises(CircuitOpenError) as info:
        breaker.check()
    assert info.value.retry_after == 6
    rejected = metrics.registry.get_sample_value(
        "servicekit_breaker_calls_total", {"dependency": "payment", "outcome": "rejected"}
    )
    assert rejected == 1
    fake_clock.advance(6)
    breaker.check()  # reset time over: a probe may go, and check() did not take its slot
    assert breaker.current_state == OPEN
