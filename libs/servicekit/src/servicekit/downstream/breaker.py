"""Circuit breakers: one per downstream dependency, so a dead one fails fast.

    closed ──trips──> open ──reset_seconds──> half-open ──probes succeed──> closed
                        ^                         │
                        └──── a probe fails ──────┘

Built on pybreaker's state machine (its states, storage, transitions and listeners), with the
asyncio path pybreaker lacks. Its own paths do not fit an event loop:

- `call_async` needs Tornado, and holds the breaker's lock across the awaited call: every other
  call through the breaker waits for the one in flight;
- `call(async_fn)` returns the coroutine un-awaited, so pybreaker records a success before
  the call even runs: awaited failures and timeouts are never counted.

`AsyncCircuitBreaker.call_async` admits the call and records its outcome in two short
synchronous sections under pybreaker's lock, and awaits the call between them, outside it.

It trips (closed -> open) on any of three conditions, checked after every call:

- failure rate: `failure_rate`% of the calls in the last `window_seconds` failed, once at least
  `min_calls` were made (the seed's "5% errors over 30 s" is failure_rate=5, window_seconds=30);
- slow-call rate: `slow_call_rate`% of those calls took `slow_call_seconds` or longer;
- `consecutive_failures` failures in a row (pybreaker's own counter; catches a dead dependency
  before `min_calls` are reached at low traffic).

Open: calls fail fast with `CircuitOpenError` (503, `Retry-After` = time left open). Then
half-open: up to `half_open_probes` calls at once go through, the rest fail fast; one failed
probe opens it again; `half_open_probes` successes close it, unless `slow_call_rate`% of them
were slow (then it opens again).

The caller decides what a failure is (`ServiceClient`: transport errors, timeouts, 408, 429,
5xx; a deliberate 4xx such as "out of stock" means the dependency is healthy and said no).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import pybreaker

from servicekit.errors import UnavailableError
from servicekit.settings import ServiceSettings
from servicekit.telemetry.metrics import Metrics

logger = logging.getLogger("servicekit.downstream.breaker")

P = ParamSpec("P")
T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
#: Values of the `servicekit_breaker_state` gauge.
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
#: Outcomes counted in `servicekit_breaker_calls`.
OUTCOMES = ("success", "failure", "slow", "rejected")
_TRANSITIONS = ((CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN))


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker trips and how it recovers (rates are percentages)."""

    failure_rate: float = 50.0
    min_calls: int = 20
    window_seconds: float = 30.0
    slow_call_seconds: float = 1.0
    slow_call_rate: float = 100.0
    consecutive_failures: int = 5
    reset_seconds: float = 10.0
    half_open_probes: int = 3

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> BreakerConfig:
        """The `<PREFIX>_BREAKER_*` settings of a service."""
        return cls(
            failure_rate=settings.breaker_failure_rate,
            min_calls=settings.breaker_min_calls,
            window_seconds=settings.breaker_window_seconds,
            slow_call_seconds=settings.breaker_slow_call_seconds,
            slow_call_rate=settings.breaker_slow_call_rate,
            consecutive_failures=settings.breaker_consecutive_failures,
            reset_seconds=settings.breaker_reset_seconds,
            half_open_probes=settings.breaker_half_open_probes,
        )


class CircuitOpenError(UnavailableError):
    """The breaker refused the call without making it (503, Retry-After: time left open)."""

    slug, title = "circuit-open", "Circuit open"

    def __init__(self, dependency: str, retry_after: float) -> None:
        super().__init__(
            f"{dependency} is failing; calls to it are paused",
            retry_after=max(1, math.ceil(retry_after)),
            extra={"dependency": dependency},
        )
        self.dependency = dependency


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as listeners (log, metrics, webhook, shared state) receive it."""

    dependency: str
    from_state: str
    to_state: str
    #: Why: failure_rate, slow_call_rate, consecutive_failures, probe_failed, probe_slow,
    #: reset_timeout, probes_succeeded, shared (another worker opened it) or manual.
    reason: str
    failure_rate: float
    slow_call_rate: float
    #: Seconds until an open breaker lets probes through (0 unless opening).
    open_seconds: float
    at: datetime


@dataclass(slots=True)
class Permit:
    """A call the breaker let through; hand it back to `record` or `release`."""

    generation: int
    probe: bool
    started: float


class _Window:
    """Calls, failures and slow calls over the last `seconds`, kept in ten time slices.

    Recording is O(1) and reading sums ten slices; a slice older than the window is reset
    the next time its position comes round.
    """

    SLICES = 10
    __slots__ = ("_calls", "_epochs", "_failures", "_slow", "_width")

    def __init__(self, seconds: float) -> None:
        self._width = seconds / self.SLICES
        self.clear()

    def clear(self) -> None:
        self._epochs = [-1] * self.SLICES
        self._calls = [0] * self.SLICES
        self._failures = [0] * self.SLICES
        self._slow = [0] * self.SLICES

    def record(self, now: float, *, failed: bool, slow: bool) -> None:
        epoch = int(now // self._width)
        i = epoch % self.SLICES
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._calls[i] = self._failures[i] = self._slow[i] = 0
        self._calls[i] += 1
        self._failures[i] += failed
        self._slow[i] += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) within the window ending at `now`."""
        oldest = int(now // self._width) - self.SLICES
        calls = failures = slow = 0
        for i, epoch in enumerate(self._epochs):
            if epoch > oldest:
                calls += self._calls[i]
                failures += self._failures[i]
                slow += self._slow[i]
        return calls, failures, slow


class AsyncCircuitBreaker(pybreaker.CircuitBreaker):
    """A pybreaker `CircuitBreaker` for asyncio: `await breaker.call_async(fn, ...)`.

    `clock` (seconds, monotonic) is injectable so tests move time instead of sleeping.
    `exclude` lists exceptions that are not the dependency's fault (pybreaker's meaning).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
        exclude: Iterable[type[BaseException]] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self.dependency = name
        self.metrics = metrics
        self._clock = clock
        self._window = _Window(self.config.window_seconds)
        # State change bookkeeping: a call admitted under an older generation reports a
        # stale outcome (the breaker moved on meanwhile) and is ignored.
        self._generation = 0
        self._probes = 0
        self._slow_probes = 0
        self._open_until = 0.0
        self.last_transition: Transition | None = None
        events: list[pybreaker.CircuitBreakerListener] = [_LogListener()]
        if metrics is not None:
            events.append(_MetricsListener(metrics, name))
        super().__init__(
            fail_max=self.config.consecutive_failures,
            reset_timeout=self.config.reset_seconds,
            success_threshold=self.config.half_open_probes,
            exclude=list(exclude),
            listeners=[*events, *listeners],
            state_storage=pybreaker.CircuitMemoryStorage(CLOSED),
            name=name,
        )

    # --- reading -------------------------------------------------------------------------

    def rates(self) -> tuple[float, float]:
        """(failure rate, slow-call rate) in percent over the current window."""
        calls, failures, slow = self._window.totals(self._clock())
        if calls == 0:
            return 0.0, 0.0
        return round(100 * failures / calls, 2), round(100 * slow / calls, 2)

    def open_remaining(self) -> float:
        """Seconds until an open breaker admits probes (0 when it is not open)."""
        if self.current_state != OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    # --- the asyncio path ----------------------------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Refused: pybreaker's synchronous path would bypass this breaker's bookkeeping."""
        raise TypeError(f"use `await breaker.call_async(...)` with {type(self).__name__}")

    async def call_async(
        self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await `func(*args, **kwargs)` if the breaker admits it; count how it ended.

        Raises `CircuitOpenError` without calling `func` while open. An exception counts as
        a failure (a timeout too) unless `exclude`d; cancellation counts as nothing.
        """
        permit = self.admit()
        try:
            result = await func(*args, **kwargs)
        except Exception as exc:
            self.record(permit, failed=self.is_system_error(exc))
            raise
        except BaseException:
            self.release(permit)
            raise
        self.record(permit, failed=False)
        return result

    def check(self) -> None:
        """Raise `CircuitOpenError` (counted as rejected) if a call now would fail fast.

        Admits nothing: for a caller that must not start work whose later call to this
        dependency is bound to be refused (order checks payment's before holding stock).
        """
        remaining = self.open_remaining()
        if remaining > 0:
            raise self._reject(remaining)

    def admit(self) -> Permit:
        """Let one call through or raise `CircuitOpenError` (no I/O, never waits)."""
        with self._lock:
            state = self.current_state
            if state == OPEN:
                remaining = self._open_until - self._clock()
                if remaining > 0:
                    raise self._reject(remaining)
                self.half_open(reason="reset_timeout")
                state = HALF_OPEN
            probe = state == HALF_OPEN
            if probe:
                if self._probes >= self.config.half_open_probes:
                    raise self._reject(1.0)
                self._probes += 1
            return Permit(self._generation, probe, self._clock())

    def record(self, permit: Permit, *, failed: bool) -> None:
        """Count how an admitted call ended and trip, close or re-open as needed."""
        now = self._clock()
        slow = now - permit.started >= self.config.slow_call_seconds
        self._count("failure" if failed else "slow" if slow else "success")
        with self._lock:
            if permit.generation != self._generation:
                return
            if permit.probe:
                self._probe_done(failed=failed, slow=slow)
                return
            self._window.record(now, failed=failed, slow=slow)
            if failed:
                self._state_storage.increment_counter()
            else:
                self._state_storage.reset_counter()
            reason = self._trip_reason(now)
            if reason is not None:
                self._open_for(self.config.reset_seconds, reason)

    def _probe_done(self, *, failed: bool, slow: bool) -> None:
        self._probes -= 1
        if failed:
            self._open_for(self.config.reset_seconds, "probe_failed")
            return
        self._state_storage.increment_success_counter()
        self._slow_probes += slow
        successes = self._state_storage.success_counter
        if successes < self.success_threshold:
            return
        # Slow probes are judged like slow calls when closed: by rate, not one by one.
        if 100 * self._slow_probes >= self.config.slow_call_rate * successes:
            self._open_for(self.config.reset_seconds, "probe_slow")
        else:
            self.close(reason="probes_succeeded")

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call neither succeeded nor failed (it was cancelled)."""
        with self._lock:
            if permit.probe and permit.generation == self._generation:
                self._probes -= 1

    def _trip_reason(self, now: float) -> str | None:
        config = self.config
        if self._state_storage.counter >= config.consecutive_failures:
            return "consecutive_failures"
        calls, failures, slow = self._window.totals(now)
        if calls < config.min_calls:
            return None
        if 100 * failures >= config.failure_rate * calls:
            return "failure_rate"
        if 100 * slow >= config.slow_call_rate * calls:
            return "slow_call_rate"
        return None

    def _reject(self, retry_after: float) -> CircuitOpenError:
        self._count("rejected")
        return CircuitOpenError(self.dependency, retry_after)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.breaker_calls.labels(self.dependency, outcome).inc()

    # --- transitions (pybreaker's, with this breaker's bookkeeping first) -----------------

    def open(self, *, reason: str = "manual") -> bool:
        """Open now: calls fail fast for `reset_seconds`."""
        return self._open_for(self.config.reset_seconds, reason)

    def follow_open(self, seconds: float) -> bool:
        """Open for `seconds` because another worker opened it; False unless it was closed."""
        with self._lock:
            if self.current_state != CLOSED or seconds <= 0:
                return False
            return self._open_for(seconds, "shared")

    def half_open(self, *, reason: str = "manual") -> None:
        """Let up to `half_open_probes` calls through to test the dependency."""
        with self._lock:
            self._begin(HALF_OPEN, reason, 0.0)
            super().half_open()

    def close(self, *, reason: str = "manual") -> None:
        """Close: calls go through, counting starts afresh."""
        with self._lock:
            self._begin(CLOSED, reason, 0.0)
            self._window.clear()
            super().close()

    def _open_for(self, seconds: float, reason: str) -> bool:
        with self._lock:
            self._open_until = self._clock() + seconds
            self._begin(OPEN, reason, seconds)
            return super().open()

    def _begin(self, to_state: str, reason: str, open_seconds: float) -> None:
        # Runs before pybreaker changes the state and calls the listeners, which read
        # `last_transition`; the rates are those that led here (the window is kept until
        # the breaker closes).
        failure_rate, slow_call_rate = self.rates()
        self.last_transition = Transition(
            self.dependency,
            self.current_state,
            to_state,
            reason,
            failure_rate,
            slow_call_rate,
            open_seconds,
            datetime.now(UTC),
        )
        self._generation += 1
        self._probes = self._slow_probes = 0


class BreakerListener(pybreaker.CircuitBreakerListener):
    """A pybreaker listener that receives `Transition`s of `AsyncCircuitBreaker`s.

    Called synchronously inside the breaker's lock: do no I/O here, hand work to a task.
    """

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        if isinstance(cb, AsyncCircuitBreaker) and cb.last_transition is not None:
            self.transition(cb, cb.last_transition)

    def transition(self, breaker: AsyncCircuitBreaker, event: Transition) -> None:
        """Override: called once per state change."""


class _LogListener(BreakerListener):
    def transition(self, breaker: AsyncCircuitBreaker, event: Transition) -> None:
        level = logging.WARNING if event.to_state == OPEN else logging.INFO
        logger.log(
            level,
            "breaker %s: %s -> %s (%s)",
            event.dependency,
            event.from_state,
            event.to_state,
            event.reason,
            extra={
                "event": "breaker_state_change",
                "dependency": event.dependency,
                "from_state": event.from_state,
                "to_state": event.to_state,
                "reason": event.reason,
                "failure_rate": event.failure_rate,
                "slow_call_rate": event.slow_call_rate,
                "open_seconds": event.open_seconds,
            },
        )


class _MetricsListener(BreakerListener):
    def __init__(self, metrics: Metrics, dependency: str) -> None:
        self.metrics = metrics
        # Every series exists from the start, so dashboards show 0 rather than "no data".
        metrics.breaker_state.labels(dependency).set(STATE_VALUES[CLOSED])
        for outcome in OUTCOMES:
            metrics.breaker_calls.labels(dependency, outcome)
        for from_state, to_state in _TRANSITIONS:
            metrics.breaker_transitions.labels(dependency, from_state, to_state)

    def transition(self, breaker: AsyncCircuitBreaker, event: Transition) -> None:
        self.metrics.breaker_state.labels(event.dependency).set(STATE_VALUES[event.to_state])
        self.metrics.breaker_transitions.labels(
            event.dependency, event.from_state, event.to_state
        ).inc()
