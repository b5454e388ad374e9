"""An adaptive concurrency limit found from measured latency (gradient, as Netflix's Gradient2).

The limit is the concurrency at which requests stop getting slower. Every window (`window`
seconds and at least `min_samples` requests), the window's mean request time (`short`) is
compared with a slow moving average of it (`long`, exponential over `long_window` windows)::

    gradient  = clamp(long / short, 0.5, 1.0)          # 1: no queue; 0.5: halve at most
    estimate  = limit x gradient + queue_size          # room to grow while latency holds
    limit     = limit x (1 - smoothing) + estimate x smoothing, within [min_limit, ceiling]

While fewer than half the limit are in flight the limit stays (the service is idle, not
fast: growing it then would only lift the ceiling). When `long` is more than twice `short`
(an overload has just ended) `long` is cut by a tenth per window, so the limit recovers in
seconds, not minutes. The fixed `<P>_MAX_CONCURRENCY` stays the ceiling.

Netflix/concurrency-limits (`Gradient2Limit`, `WindowedLimit`) uses the same arithmetic with
one-second windows; here the window is shorter because a Python service's overload builds up
in well under a second, and the same smoothing then reacts within about a second.
"""

from __future__ import annotations

#: Gradient2's defaults: a fixed queue allowance, smoothing 0.2, a 600-window long average
#: whose first 10 windows are a plain mean.
QUEUE_SIZE = 4
SMOOTHING = 0.2
LONG_WINDOW = 600
WARM_UP_WINDOWS = 10


class GradientLimit:
    """The limit's arithmetic: fed one sample per finished request, with its end time."""

    def __init__(
        self,
        ceiling: int,
        *,
        initial: int = 20,
        min_limit: int = 8,
        window: float = 0.25,
        min_samples: int = 10,
        queue_size: int = QUEUE_SIZE,
        smoothing: float = SMOOTHING,
    ) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        self.ceiling = ceiling
        self.min_limit = max(1, min(min_limit, ceiling))
        self.estimate = float(max(self.min_limit, min(initial, ceiling)))
        self.window = window
        self.min_samples = min_samples
        self.queue_size = queue_size
        self.smoothing = smoothing
        self.long_rtt = 0.0
        self.short_rtt = 0.0
        self._windows = 0
        self._window_end: float | None = None
        self._sum = 0.0
        self._count = 0
        self._max_in_flight = 0

    @property
    def limit(self) -> int:
        """The limit in force: whole requests, never below `min_limit` nor above the ceiling."""
        return int(self.estimate)

    def sample(self, rtt: float, in_flight: int, now: float) -> bool:
        """Count one finished request (`rtt` seconds, `in_flight` when it started) ending at
        `now`; True when that closed a window and the limit was recomputed."""
        if self._window_end is None:
            self._window_end = now + self.window
        self._sum += rtt
        self._count += 1
        self._max_in_flight = max(self._max_in_flight, in_flight)
        if now < self._window_end:
            return False
        ready = self._count >= self.min_samples
        if ready:
            self._update(self._sum / self._count, self._max_in_flight)
        self._window_end = now + self.window
        self._sum, self._count, self._max_in_flight = 0.0, 0, 0
        return ready

    def _update(self, short: float, in_flight: int) -> None:
        self.short_rtt = short
        if self._windows < WARM_UP_WINDOWS:
            self._windows += 1
            self.long_rtt += (short - self.long_rtt) / self._windows
        else:
            factor = 2.0 / (LONG_WINDOW + 1)
            self.long_rtt = self.long_rtt * (1 - factor) + short * factor
        if short > 0 and self.long_rtt / short > 2:
            self.long_rtt *= 0.9
        if in_flight < self.estimate / 2:
            return
        gradient = 1.0 if short <= 0 else max(0.5, min(1.0, self.long_rtt / short))
        target = self.estimate * gradient + self.queue_size
        estimate = self.estimate * (1 - self.smoothing) + target * self.smoothing
        self.estimate = max(float(self.min_limit), min(float(self.ceiling), estimate))

    def __repr__(self) -> str:
        return (
            f"GradientLimit(limit={self.limit}, short={self.short_rtt * 1000:.1f} ms, "
            f"long={self.long_rtt * 1000:.1f} ms, ceiling={self.ceiling})"
        )
