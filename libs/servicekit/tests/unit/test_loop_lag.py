"""The queue timeout in front of the limiter: event-loop lag, CoDel-style, on a fake clock."""

from __future__ import annotations

import asyncio
import time

from servicekit.admission.lag import LoopQueue
from servicekit.admission.limiter import ConcurrencyLimiter
from servicekit.testing import FakeClock

TARGET, INTERVAL = 0.05, 0.2


def ticking(clock: FakeClock) -> LoopQueue:
    queue = LoopQueue(target=TARGET, interval=INTERVAL, clock=clock)
    queue.due = clock() + queue.tick
    return queue


def tick(queue: LoopQueue, clock: FakeClock, lag: float) -> None:
    """The loop runs the pending tick `lag` late; the next is due a tick later."""
    assert queue.due is not None
    clock.now = queue.due + lag
    queue.observe(lag, clock())
    queue.due = clock() + queue.tick


def test_a_burst_of_lag_is_tolerated(fake_clock: FakeClock) -> None:
    queue = ticking(fake_clock)
    for _ in range(3):
        tick(queue, fake_clock, 0.06)  # 3 x ~70 ms above target: under one interval
    assert queue.wait(fake_clock()) == 0.06
    assert not queue.overdue(fake_clock())
    tick(queue, fake_clock, 0.01)  # back under the target: the standing time restarts
    assert queue.above_since is None


def test_a_standing_queue_refuses_requests_that_waited_past_the_target(
    fake_clock: FakeClock,
) -> None:
    queue = ticking(fake_clock)
    for _ in range(4):
        tick(queue, fake_clock, 0.08)
    assert queue.above_since is not None
    assert fake_clock() - queue.above_since >= INTERVAL
    assert queue.overdue(fake_clock())


def test_a_loop_stuck_past_the_interval_counts_without_a_tick(fake_clock: FakeClock) -> None:
    queue = ticking(fake_clock)
    assert queue.due is not None
    fake_clock.now = queue.due + TARGET + INTERVAL / 2
    assert not queue.overdue(fake_clock())
    fake_clock.now = queue.due + TARGET + INTERVAL
    assert queue.wait(fake_clock()) == TARGET + INTERVAL
    assert queue.overdue(fake_clock())


def test_limiter_sheds_for_the_queue_only_with_work_in_flight(fake_clock: FakeClock) -> None:
    queue = ticking(fake_clock)
    limiter = ConcurrencyLimiter(8, degrade_at=0.5, queue=queue, clock=fake_clock)
    for _ in range(4):
        tick(queue, fake_clock, 0.08)
    # Under the degrade threshold: the lag is not the admitted work's, refusing would not help.
    assert [limiter.try_acquire() for _ in range(4)] == [None] * 4
    assert limiter.try_acquire() == "queue"
    assert limiter.try_acquire(shadow=True) == "queue"
    assert limiter.try_acquire(critical=True) is None
    tick(queue, fake_clock, 0.0)
    assert limiter.try_acquire() is None


async def test_measures_a_blocked_event_loop() -> None:
    queue = LoopQueue(target=TARGET, interval=INTERVAL, tick=0.005)
    queue.start()
    try:
        await asyncio.sleep(0.02)
        time.sleep(0.1)  # blocks the loop on purpose: that is the lag
        await asyncio.sleep(0.001)
        assert queue.lag >= 0.09
        assert queue.above_since is not None
        for _ in range(100):  # the loop runs freely again (a busy machine may take a while)
            await asyncio.sleep(0.01)
            if queue.lag < TARGET:
                break
        assert queue.lag < TARGET
        assert queue.above_since is None
    finally:
        queue.stop()
