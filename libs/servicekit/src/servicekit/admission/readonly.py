"""Data tier of load shedding: read-only mode while the database is saturated.

Two signals, measured without blocking anything:

- pool checkout wait, timed by `Database.transaction` (a pool timeout counts as an endless wait);
- statement latency, timed by SQLAlchemy's `before/after_cursor_execute` engine events.

When the p95 of either over the last `window` seconds (at least `min_samples` samples) reaches
its threshold (`<P>_READ_ONLY_POOL_WAIT_MS`, `<P>_READ_ONLY_DB_LATENCY_MS`), the service enters
read-only mode: writes (POST, PUT, PATCH, DELETE) get 503 problem+json with `Retry-After`,
reads go on. It leaves by itself, with hysteresis: after at least `min_dwell` seconds and once
both p95s over the samples left in the window (none counts as calm) are below `EXIT_RATIO` of
their thresholds. An operator can also hold it on (`force`, through `/internal/read-only`,
servicekit.admission.switch), before a migration or while the database is looked at; switched
off again, the decision is the measurements' once more.

The checkout wait is timed on the event loop, so it also grows when the process itself is
CPU-bound rather than the pool short: either way requests queue for the database, and
writes, the costliest requests, are what to refuse first.

Critical calls (`X-Request-Priority: critical`: saga commit, release, refund) are still
admitted: each is one short write that finishes or undoes work already done (stock held, money
taken); refusing it would keep that state around longer and make the recovery pass redo it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from starlette.types import Send

from servicekit.data.database import Database
from servicekit.errors import problem_body, send_problem
from servicekit.telemetry.metrics import Metrics

logger = logging.getLogger("servicekit.admission.readonly")

#: Leave read-only mode below this share of the entry thresholds.
EXIT_RATIO = 0.5
#: The decision is re-evaluated at most this often (seconds): p95s sort their window.
EVALUATE_EVERY = 0.1
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_SAMPLES = 1024


def _p95(samples: deque[tuple[float, float]]) -> float:
    values = sorted(value for _, value in samples)
    return values[max(0, math.ceil(0.95 * len(values)) - 1)]


class ReadOnlyGuard:
    """Decides read-only mode from pool waits and statement latencies (seconds; clock injected)."""

    def __init__(
        self,
        *,
        pool_wait: float,
        db_latency: float,
        window: float = 5.0,
        min_dwell: float = 5.0,
        min_samples: int = 20,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool_wait = pool_wait
        self.db_latency = db_latency
        self.window = window
        self.min_dwell = min_dwell
        self.min_samples = min_samples
        self.metrics = metrics
        self.clock = clock
        self._waits: deque[tuple[float, float]] = deque(maxlen=_MAX_SAMPLES)
        self._latencies: deque[tuple[float, float]] = deque(maxlen=_MAX_SAMPLES)
        self._read_only = False
        #: Held on by an operator (`force`), whatever the measurements say.
        self.forced = False
        self._entered_at = 0.0
        self._evaluated_at = -math.inf
        if metrics is not None:
            metrics.read_only_mode.set(0)

    # PoolObserver ---------------------------------------------------------------------------

    def checkout(self, wait: float) -> None:
        """A pool checkout took `wait` seconds."""
        self._observe(self._waits, wait)

    def timeout(self) -> None:
        """A pool checkout gave up."""
        self._observe(self._waits, math.inf)

    def statement(self, seconds: float) -> None:
        """A statement took `seconds`."""
        self._observe(self._latencies, seconds)

    def _observe(self, samples: deque[tuple[float, float]], value: float) -> None:
        now = self.clock()
        samples.append((now, value))
        # Decided as samples come too, so the mode (gauge, log) follows the database even
        # when no write arrives to ask.
        if now - self._evaluated_at >= EVALUATE_EVERY:
            self._evaluated_at = now
            self._evaluate(now)

    # Decision -------------------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """True while writes are refused (re-evaluated at most every `EVALUATE_EVERY`)."""
        now = self.clock()
        if now - self._evaluated_at >= EVALUATE_EVERY:
            self._evaluated_at = now
            self._evaluate(now)
        return self._read_only or self.forced

    def force(self, on: bool) -> None:
        """Hold read-only mode on (`on`), or hand the decision back to the measurements."""
        if on == self.forced:
            return
        self.forced = on
        if self.metrics is not None:
            self.metrics.read_only_mode.set(1 if on or self._read_only else 0)
        if on:
            logger.warning("read-only mode held on by an operator; writes answer 503")
        else:
            logger.info("read-only mode released by an operator")

    def retry_after(self) -> int:
        """Seconds a refused writer should wait: what is left of the minimum dwell, >= 1."""
        left = self._entered_at + self.min_dwell - self.clock()
        return max(1, math.ceil(left))

    def _recent_p95(
        self, samples: deque[tuple[float, float]], now: float, minimum: int
    ) -> float | None:
        while samples and samples[0][0] < now - self.window:
            samples.popleft()
        return _p95(samples) if samples and len(samples) >= minimum else None

    def _evaluate(self, now: float) -> None:
        # Entering takes `min_samples` (one slow query is no saturation); leaving takes
        # whatever recent samples there are being calm, so a quiet service is not stuck.
        minimum = 1 if self._read_only else self.min_samples
        wait = self._recent_p95(self._waits, now, minimum)
        latency = self._recent_p95(self._latencies, now, minimum)
        if not self._read_only:
            if wait is not None and wait >= self.pool_wait:
                self._enter(now, f"pool checkout wait p95 {_ms(wait)} >= {_ms(self.pool_wait)}")
            elif latency is not None and latency >= self.db_latency:
                self._enter(now, f"statement p95 {_ms(latency)} >= {_ms(self.db_latency)}")
            return
        if now - self._entered_at < self.min_dwell:
            return
        calm_wait = wait is None or wait < self.pool_wait * EXIT_RATIO
        calm_latency = latency is None or latency < self.db_latency * EXIT_RATIO
        if calm_wait and calm_latency:
            self._read_only = False
            if self.metrics is not None and not self.forced:
                self.metrics.read_only_mode.set(0)
            logger.info("leaving read-only mode after %.1f s", now - self._entered_at)

    def _enter(self, now: float, why: str) -> None:
        self._read_only, self._entered_at = True, now
        if self.metrics is not None:
            self.metrics.read_only_mode.set(1)
        logger.warning("entering read-only mode: %s; writes answer 503", why)

    # Wiring ---------------------------------------------------------------------------------

    def attach(self, database: Database) -> None:
        """Observe `database`: its checkouts (PoolObserver) and its statements (engine events)."""
        database.observers.append(self)
        started = "_servicekit_started"

        def before(_c: Any, _cur: Any, _s: Any, _p: Any, execution: Any, _m: Any) -> None:
            if execution is not None:
                setattr(execution, started, time.perf_counter())

        def after(_c: Any, _cur: Any, _s: Any, _p: Any, execution: Any, _m: Any) -> None:
            begun = getattr(execution, started, None)
            if begun is not None:
                self.statement(time.perf_counter() - begun)

        event.listen(database.engine.sync_engine, "before_cursor_execute", before)
        event.listen(database.engine.sync_engine, "after_cursor_execute", after)


def _ms(seconds: float) -> str:
    return "timeout" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


async def send_unavailable(send: Send, detail: str, *, slug: str, retry_after: int = 1) -> None:
    """503 problem+json with Retry-After, written directly (the fast path of every tier)."""
    body = problem_body(503, detail, title="Service Unavailable", slug=slug)
    await send_problem(send, 503, body, (b"retry-after", str(retry_after).encode()))
