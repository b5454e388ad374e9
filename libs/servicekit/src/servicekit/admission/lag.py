"""The queue in front of admission: event-loop lag, and a queue timeout in the spirit of CoDel.

A request waits before any middleware runs: its bytes sit in the socket until the loop polls
it, then its task sits in the loop's ready queue behind every other callback. Neither wait is
visible to ASGI code, but both are bounded by how late the loop runs a timer (its *lag*), so a
timer due every `tick` seconds measures it; a request arriving now has waited about the
last lag, or longer if the next tick is already overdue (`wait`).

The decision follows CoDel (Nichols & Jacobson, 2012) and Facebook's adaptive LIFO: a short
burst of lag is tolerated, a *standing* queue is not. Once the lag has stayed above `target`
for a whole `interval`, a request whose estimated wait is past `target` is refused at once
(503 `overloaded`, reason "queue") instead of being served late. The limiter applies it only
from its degrade threshold on: the lag is then the admitted work's, refusing lightens the loop,
and the slots in use keep the goodput (CoDel likewise never drops from a nearly empty queue;
when the lag comes from the refusals themselves, refusing everything would serve nothing).
The lag is a gauge (`servicekit_event_loop_lag_seconds`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import Gauge


class LoopQueue:
    """Samples the event loop's lag and says when a request has waited too long to serve."""

    def __init__(
        self,
        *,
        target: float,
        interval: float,
        tick: float = 0.01,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if target <= 0 or interval <= 0 or tick <= 0:
            raise ValueError("target, interval and tick must be > 0")
        self.target = target
        self.interval = interval
        self.tick = tick
        self.gauge = gauge
        self.clock = clock
        self.lag = 0.0
        #: When the next tick is due (None until `start`).
        self.due: float | None = None
        #: Since when the lag has stayed above target (CoDel's first_above_time), or None.
        self.above_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start sampling on the running loop (idempotent; called on the first request)."""
        if self._handle is None:
            self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self.due = self.clock() + self.tick
        self._handle = loop.call_later(self.tick, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self.clock()
        self.observe(now - (self.due or now), now)
        self._schedule(loop)

    def observe(self, lag: float, now: float) -> None:
        """Record one tick that ran `lag` seconds late, at `now`."""
        self.lag = max(0.0, lag)
        if self.gauge is not None:
            self.gauge.set(self.lag)
        if self.lag <= self.target:
            self.above_since = None
        elif self.above_since is None:
            self.above_since = now - self.lag + self.target  # when it crossed the target

    def wait(self, now: float) -> float:
        """The wait of a request that reached the app at `now`, as far as the loop shows it."""
        overdue = 0.0 if self.due is None else now - self.due
        return max(self.lag, overdue)

    def overdue(self, now: float) -> bool:
        """True when a request arriving now should be refused: the lag has stood above the
        target for a whole interval, and this request's wait is past the target."""
        wait = self.wait(now)
        if wait <= self.target:
            return False
        since = self.above_since
        if since is None and self.due is not None:
            since = self.due + self.target  # the pending tick itself is late past the target
        return since is not None and now - since >= self.interval
