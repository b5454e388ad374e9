"""Service tier of load shedding: in-flight requests of one process against its limit.

Requests in flight in this process, against the limit `L`: `<P>_MAX_CONCURRENCY`, or with
`<P>_ADAPTIVE_CONCURRENCY` the limit found from measured latency (`admission.adaptive`),
which the fixed one caps::

    in flight < degrade (L x <P>_DEGRADE_AT) .... everything is admitted
    >= degrade: DEGRADED ........................ cacheable reads with a cached answer are served
                                                  from cache, `X-Degraded: cache`; shadow (dyed)
                                                  traffic is shed (reason "shadow")
    >= L ........................................ normal traffic is shed (reason "concurrency")
    >= L + headroom ............................. critical traffic (`X-Request-Priority:
                                                  critical`: saga confirm and compensate) too

Before any of these, the queue timeout (`admission.lag`): from the degrade threshold on, a
request that waited in the event loop past the target is shed (reason "queue").

A shed request gets 503 problem+json with `Retry-After` at once: no database, no body read.
Degraded mode is entered when in-flight requests reach the degrade threshold and left once
they stayed below it for `hold` seconds, so the mode (gauge `servicekit_degraded_mode`, one log
line per change) does not flap with every request.

Cacheable reads (`cached_paths`: GET answers that do not depend on the caller) also use the
cache under normal load, cache-aside: a fresh answer (`<P>_CACHE_TTL_SECONDS`) is served, a
miss goes to the handler and its 200 is stored. Health, metrics and the fault switch are
never shed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from servicekit.admission.adaptive import GradientLimit
from servicekit.admission.lag import LoopQueue
from servicekit.telemetry.metrics import Metrics

logger = logging.getLogger("servicekit.admission")

#: Critical calls may go this far past the hard limit (at least one request).
CRITICAL_HEADROOM = 0.1


class ConcurrencyLimiter:
    """In-flight accounting and thresholds of one process (the event loop is its only user)."""

    def __init__(
        self,
        limit: int,
        *,
        degrade_at: float = 0.8,
        hold: float = 1.0,
        metrics: Metrics | None = None,
        adaptive: GradientLimit | None = None,
        queue: LoopQueue | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1 (turn the limiter off instead)")
        self.ceiling = limit
        self.degrade_at = degrade_at
        self.hold = hold
        self.clock = clock
        self.metrics = metrics
        self.adaptive = adaptive
        self.queue = queue
        self.in_flight = 0
        self._degraded = False
        self._pressure_at = 0.0
        self._entered_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._set_limit(limit if adaptive is None else min(limit, adaptive.limit))
        if metrics is not None:
            metrics.degraded_mode.set(0)

    def _set_limit(self, limit: int) -> None:
        self.limit = limit
        self.degrade_threshold = max(1, math.ceil(limit * self.degrade_at))
        self.critical_limit = limit + max(1, math.ceil(limit * CRITICAL_HEADROOM))
        if self.metrics is not None:
            self.metrics.concurrency_limit.set(limit)

    @property
    def degraded(self) -> bool:
        """True in degraded mode (brought up to date first: an idle spell may have ended it)."""
        self._update()
        return self._degraded

    def try_acquire(self, *, shadow: bool = False, critical: bool = False) -> str | None:
        """Take a slot, or return why not ("shadow", "queue" or "concurrency") and take nothing."""
        if critical:
            ceiling, reason = self.critical_limit, "concurrency"
        else:
            if (
                self.queue is not None
                and self.in_flight >= self.degrade_threshold
                and self.queue.overdue(self.clock())
            ):
                self._update()
                return "queue"
            if shadow:
                ceiling, reason = self.degrade_threshold, "shadow"
            else:
                ceiling, reason = self.limit, "concurrency"
        if self.in_flight >= ceiling:
            self._update()
            return reason
        self.in_flight += 1
        if self._degraded or self.in_flight >= self.degrade_threshold:
            self._update()  # only then is there a mode to enter, refresh or leave
        return None

    def release(self, started: float | None = None) -> None:
        """Give a slot back; `started` (the clock when it was taken) feeds the adaptive limit."""
        adaptive = self.adaptive
        if adaptive is not None and started is not None:
            now = self.clock()
            if adaptive.sample(now - started, self.in_flight, now):
                self._set_limit(adaptive.limit)
        self.in_flight -= 1
        if self._degraded:
            self._update()

    def _update(self) -> None:
        now = self.clock()
        if self.in_flight >= self.degrade_threshold:
            self._pressure_at = now
            if not self._degraded:
                self._enter(now)
        elif self._degraded and now - self._pressure_at >= self.hold:
            self._leave(now)

    def _enter(self, now: float) -> None:
        self._degraded, self._entered_at = True, now
        if self.metrics is not None:
            self.metrics.degraded_mode.set(1)
        logger.warning(
            "entering degraded mode: %d requests in flight (degrade at %d, limit %d)",
            self.in_flight,
            self.degrade_threshold,
            self.limit,
        )
        self._schedule_check()

    def _leave(self, now: float) -> None:
        self._degraded = False
        if self.metrics is not None:
            self.metrics.degraded_mode.set(0)
        logger.info("leaving degraded mode after %.1f s", now - self._entered_at)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_check(self) -> None:
        # Without traffic nobody calls _update: a timer lets an idle process leave the mode.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.hold, self._check)

    def _check(self) -> None:
        self._timer = None
        self._update()
        if self._degraded:
            self._schedule_check()
