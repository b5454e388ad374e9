"""FallbackRateLimiter with a shared storage that fails on command: an injected clock, no sleeps.

The real Redis (healthy, killed, stalled) is in tests/integration/test_limits_redis*.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest
from gateway.access import rule
from gateway.rate_limiter import FallbackRateLimiter, parse_limit
from limits.aio.storage import MemoryStorage
from prometheus_client import CollectorRegistry, Gauge
from servicekit.testing import FakeClock


class FlakyStorage(MemoryStorage):
    """A shared storage stand-in: counts in memory, or fails like a dead Redis when `down`."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.stalled: asyncio.Event | None = None
        #: Keys containing this text hang until `stalled` is set; other keys answer.
        self.stalled_keys = ""
        #: Seconds each call takes to answer (a round trip).
        self.latency = 0.0
        self.probes = 0

    async def _outage(self, key: str) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.stalled is not None and self.stalled_keys in key:
            await self.stalled.wait()
        if self.down:
            raise ConnectionError("Connection refused")

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        await self._outage(key)
        return await super().incr(key, expiry, amount)

    async def get(self, key: str) -> int:
        await self._outage(key)
        return await super().get(key)

    async def check(self) -> bool:
        self.probes += 1
        return not self.down


RULE = rule("client", parse_limit("3/hour"))
CHECKOUT = rule("checkout", parse_limit("4/hour"), processes=2)


@pytest.fixture
def gauge() -> Gauge:
    return Gauge("fallback", "test", registry=CollectorRegistry())


@pytest.fixture
def storage() -> FlakyStorage:
    return FlakyStorage()


@pytest.fixture
def limiter(storage: FlakyStorage, fake_clock: FakeClock, gauge: Gauge) -> FallbackRateLimiter:
    return FallbackRateLimiter(
        storage,
        shadow_primary=storage,
        timeout=0.05,
        clock=fake_clock,
        backoff=(1.0, 8.0),
        gauge=gauge,
    )


async def _allowed(limiter: FallbackRateLimiter, n: int, *ids: str) -> list[bool]:
    return [(await limiter.hit(RULE, *ids)).allowed for _ in range(n)]


async def _settle(limiter: FallbackRateLimiter) -> None:
    if limiter.probe is not None:
        await limiter.probe


async def test_counts_in_the_shared_storage_while_it_answers(
    limiter: FallbackRateLimiter, storage: FlakyStorage
) -> None:
    assert await _allowed(limiter, 4, "alice") == [True, True, True, False]
    decision = await limiter.hit(RULE, "alice")
    assert decision.shared and not decision.allowed
    assert 3590 < decision.reset_after <= 3600
    assert storage.storage, "the hits were counted in the shared storage"


async def test_a_dead_storage_never_raises_and_falls_back_to_process_memory(
    limiter: FallbackRateLimiter, storage: FlakyStorage, gauge: Gauge
) -> None:
    storage.down = True
    decisions = [await limiter.hit(RULE, "alice") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert not any(d.shared for d in decisions)
    assert not limiter.shared
    assert gauge._value.get() == 1


async def test_logs_the_switch_once_each_way(
    limiter: FallbackRateLimiter,
    storage: FlakyStorage,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.rate_limiter")
    storage.down = True
    await asyncio.gather(*(limiter.hit(RULE, f"c{i}") for i in range(20)))
    storage.down = False
    fake_clock.advance(1.0)
    await limiter.hit(RULE, "alice")
    await _settle(limiter)
    for _ in range(10):
        await limiter.hit(RULE, "bob")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unavailable" in m for m in messages) == 1
    assert sum("Redis is back" in m for m in messages) == 1
    assert limiter.shared


async def test_probes_with_backoff_and_not_on_every_request(
    limiter: FallbackRateLimiter, storage: FlakyStorage, fake_clock: FakeClock, gauge: Gauge
) -> None:
    storage.down = True
    await limiter.hit(RULE, "alice")  # t=1000: lost, next probe at +1 s
    probe_times = []
    for _ in range(300):  # 30 s of traffic at 10 requests a second
        fake_clock.advance(0.1)
        await limiter.hit(RULE, "alice")
        before = storage.probes
        await _settle(limiter)
        if storage.probes != before:
            probe_times.append(round(fake_clock.now - 1000, 1))
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(probe_times)]
    assert probe_times[0] == pytest.approx(1.0)
    assert gaps[:3] == [2.0, 4.0, 8.0]
    assert set(gaps[3:]) == {8.0}, "backoff is capped"
    storage.down = False
    fake_clock.advance(8.0)
    await limiter.hit(RULE, "alice")
    await _settle(limiter)
    assert limiter.shared
    assert gauge._value.get() == 0
    assert (await limiter.hit(RULE, "carol")).shared


async def test_a_flapping_storage_is_probed_less_and_less_often(
    limiter: FallbackRateLimiter, storage: FlakyStorage, fake_clock: FakeClock
) -> None:
    gaps = []
    for _ in range(4):
        storage.down = True
        await limiter.hit(RULE, "alice")  # lost
        lost_at = fake_clock.now
        storage.down = False
        while limiter.shared is False:
            fake_clock.advance(0.25)
            await limiter.hit(RULE, "alice")
            await _settle(limiter)
        gaps.append(fake_clock.now - lost_at)
        fake_clock.advance(1.0)  # back for a moment only
    assert gaps == [1.0, 2.0, 4.0, 8.0]
    fake_clock.advance(60)  # stable for a while: the next outage starts over
    storage.down = True
    await limiter.hit(RULE, "alice")
    storage.down = False
    fake_clock.advance(1.0)
    await limiter.hit(RULE, "alice")
    await _settle(limiter)
    assert limiter.shared


async def test_a_stalled_storage_costs_one_timeout_then_requests_skip_it(
    limiter: FallbackRateLimiter, storage: FlakyStorage
) -> None:
    storage.stalled = asyncio.Event()  # never set: every call hangs
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = await asyncio.gather(*(limiter.hit(RULE, f"c{i}") for i in range(10)))
    waited = loop.time() - start
    start = loop.time()
    after = [await limiter.hit(RULE, f"d{i}") for i in range(50)]
    skipped = loop.time() - start
    assert all(d.allowed and not d.shared for d in first + after)
    assert 0.05 <= waited < 0.5, "the calls in flight waited for the timeout, once"
    assert skipped < 0.05, "later requests never touch the stalled storage"
    storage.stalled.set()


async def test_calls_waiting_on_a_stalled_storage_all_give_up_at_the_first_deadline(
    storage: FlakyStorage, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.rate_limiter")
    limiter = FallbackRateLimiter(storage, shadow_primary=storage, timeout=0.2, clock=fake_clock)
    storage.stalled = asyncio.Event()  # never set: every call hangs
    loop = asyncio.get_running_loop()

    async def timed_hit(delay: float, client: str) -> float:
        await asyncio.sleep(delay)
        start = loop.time()
        assert not (await limiter.hit(RULE, client)).shared
        return loop.time() - start

    # Requests arriving during the first call's 0.2 s wait: each gives up when it ends.
    first, second, third = await asyncio.gather(
        timed_hit(0.0, "a"), timed_hit(0.08, "b"), timed_hit(0.14, "c")
    )
    assert 0.2 <= first < 0.3
    assert second < 0.18, "gave up with the first call, not at its own deadline"
    assert third < 0.12, "gave up with the first call, not at its own deadline"
    assert not limiter.shared
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1
    storage.stalled.set()
    await limiter.aclose()


async def test_a_slow_call_while_the_storage_answers_others_is_not_an_outage(
    limiter: FallbackRateLimiter, storage: FlakyStorage, gauge: Gauge
) -> None:
    """One call stuck (a queue for a pooled connection, one broken connection): Redis is up."""
    storage.stalled = asyncio.Event()
    storage.stalled_keys = "stuck"
    stuck = asyncio.create_task(limiter.hit(RULE, "stuck"))
    others = [await limiter.hit(RULE, f"c{i}") for i in range(3)]
    decision = await stuck
    assert decision.allowed and not decision.shared, "the stuck hit was counted here"
    assert all(d.shared for d in others)
    assert limiter.shared, "the others' answers showed Redis alive: no switch to memory"
    assert gauge._value.get() == 0
    assert (await limiter.hit(RULE, "next")).shared
    storage.stalled.set()


async def test_a_busy_event_loop_does_not_pass_for_an_outage(
    limiter: FallbackRateLimiter, storage: FlakyStorage
) -> None:
    """The loop held for twice the timeout before the call could start: it still gets its time."""
    storage.latency = 0.01
    loop = asyncio.get_running_loop()
    loop.call_soon(time.sleep, 0.1)  # runs before the call's first step: a busy loop
    decision = await limiter.hit(RULE, "alice")
    assert decision.shared and decision.allowed
    assert limiter.shared


async def test_fail_closed_rule_allows_only_the_process_share_while_alone(
    limiter: FallbackRateLimiter, storage: FlakyStorage
) -> None:
    shared = [(await limiter.hit(CHECKOUT, "alice")).allowed for _ in range(5)]
    storage.down = True
    alone = [await limiter.hit(CHECKOUT, "bob") for _ in range(3)]
    assert shared == [True, True, True, True, False]
    assert [d.allowed for d in alone] == [True, True, False]
    assert alone[-1].limit == 2


async def test_without_a_shared_storage_counts_per_process_for_good(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = FallbackRateLimiter(None, timeout=0.05, clock=fake_clock)
    assert not limiter.shared
    assert [(await limiter.hit(CHECKOUT, "alice")).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    fake_clock.advance(3600)
    await limiter.hit(RULE, "alice")
    assert limiter.probe is None
    assert not caplog.records


async def test_close_stops_a_probe_in_flight(
    limiter: FallbackRateLimiter, storage: FlakyStorage, fake_clock: FakeClock
) -> None:
    storage.down = True
    await limiter.hit(RULE, "alice")
    storage.stalled = asyncio.Event()

    async def hanging_check() -> bool:
        assert storage.stalled is not None
        await storage.stalled.wait()
        return True

    storage.check = hanging_check  # type: ignore[method-assign]
    fake_clock.advance(1.0)
    await limiter.hit(RULE, "alice")
    assert limiter.probe is not None and not limiter.probe.done()
    await limiter.aclose()
    assert limiter.probe.done()
