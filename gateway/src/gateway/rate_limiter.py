"""Rate-limit counting that survives Redis: shared counts in Redis, per-process counts without it.

Built on `limits.aio` (the asyncio strategies and storages of the `limits` package): every
Redis call is awaited with a short timeout, so a dead or stalled Redis never blocks the event
loop and never turns into a 5xx. When a call fails or times out the limiter switches to
in-memory counting in this process (logged once, `servicekit_rate_limit_fallback` = 1) and
probes Redis in the background with exponential backoff; the first probe that answers
switches it back (logged once). Requests never wait for a probe, and a Redis that flaps is
probed less and less often.

A stall costs at most one timeout, once, for everybody: the first call to reach its deadline
declares the outage, and every call still waiting on Redis gives up at that moment instead of
waiting for a deadline of its own (benchmark B6: a 1 s stall otherwise delays a whole
timeout's worth of requests by a full timeout each). What declares an outage is Redis
silence, not a busy event loop: a deadline that fires late (the loop was held) gives the call
its time once more, and a call that fails or times out while Redis answered other calls
meanwhile (a queue for a pooled connection, one broken connection) is counted in this
process alone, without switching everybody over.

A `Rule` carries two amounts: `item`, counted in Redis and shared by every gateway process,
and `local_item`, what one process enforces while it counts alone. Availability-first limits
use the same amount for both; fail-closed ones (checkout attempts) give each process only its
share, so the fleet as a whole never lets more through than the limit (see `gateway.access`).

Dyed (load-test) traffic is counted apart from live traffic, in a storage of its own
(`shadow_primary`: the same Redis, every key under the shadow prefix) and its own process
memory, so a load test never spends a live client's or the gateway's live budget, and every
Redis key it writes is a shadow key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from prometheus_client import Gauge

logger = logging.getLogger("gateway.rate_limiter")

#: First and longest wait between two probes of a Redis that went away.
PROBE_BACKOFF = (0.5, 10.0)
#: A deadline that fires this late (share of the timeout) shows a busy loop: wait once more...
LATE = 0.25
#: ...but never longer than this many timeouts in all. A loop held past the timeout again and
#: again can need several of its free moments for one round trip (the write, then the read,
#: shared with every other request); 4 was too few on a 2-core machine under test load.
LONGEST = 8


def parse_limit(value: str) -> RateLimitItem:
    """One limit in limits notation (`"200/second"`); ValueError otherwise."""
    try:
        items = parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit like '200/second' ({exc})") from None
    if len(items) != 1:
        raise ValueError(f"{value!r}: give exactly one limit, like '200/second'")
    return items[0]


class _GaveUp(Exception):
    """A call given up on without new evidence of an outage: count the hit here, keep the mode.

    Either another call has declared the outage meanwhile, or the call failed or reached its
    deadline while the shared storage kept answering other calls.
    """


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit: `item` when counted in Redis, `local_item` when counted in this process."""

    name: str
    item: RateLimitItem
    local_item: RateLimitItem


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a hit was allowed, by which amount, and when the window resets."""

    allowed: bool
    #: The amount that was enforced (the shared or the per-process one).
    limit: int
    #: Seconds until the window resets; computed only for refusals (0.0 when allowed).
    reset_after: float
    #: True if the hit was counted in the shared storage.
    shared: bool


class FallbackRateLimiter:
    """Fixed-window counting in a shared storage (Redis), falling back to process memory.

    `primary=None` means no shared storage is configured: counting is per process for good.
    `shadow_primary` (required with `primary`, on the same server) counts dyed traffic.
    """

    def __init__(
        self,
        primary: Storage | None,
        *,
        shadow_primary: Storage | None = None,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = PROBE_BACKOFF,
        gauge: Gauge | None = None,
    ) -> None:
        self.timeout = timeout
        self._primary_storage = primary
        if (primary is None) != (shadow_primary is None):
            raise ValueError("a shared storage for live traffic needs one for dyed traffic")
        # Indexed by `shadow`: live and dyed traffic never count against each other.
        self._primary = (
            (FixedWindowRateLimiter(primary), FixedWindowRateLimiter(shadow_primary))
            if primary is not None and shadow_primary is not None
            else None
        )
        self._local = (
            FixedWindowRateLimiter(MemoryStorage()),
            FixedWindowRateLimiter(MemoryStorage()),
        )
        self._clock = clock
        self._backoff_range = backoff
        self._backoff = backoff[0]
        self._next_probe = 0.0
        self._recovered_at = float("-inf")
        self._probe: asyncio.Task[None] | None = None
        self._gauge = gauge
        self._shared = primary is not None
        # Calls given up on at their deadline, kept referenced until they finish unwinding.
        self._abandoned: set[asyncio.Task[Decision]] = set()
        # Done when an outage is declared: every call waiting on the shared storage races it.
        self._outage: asyncio.Future[None] | None = None
        # Answers from the shared storage so far: proof of life for a call that waited long.
        self._answers = 0

    @property
    def shared(self) -> bool:
        """True while hits are counted in the shared storage."""
        return self._shared

    @property
    def probe(self) -> asyncio.Task[None] | None:
        """The background probe of the shared storage, if one has been started."""
        return self._probe

    async def hit(self, rule: Rule, *identifiers: str, shadow: bool = False) -> Decision:
        """Count one hit against `rule` for `identifiers` (dyed traffic: `shadow`, counted
        apart); never raises for a storage failure."""
        if self._primary is not None and self._use_primary():
            try:
                return await self._bounded(
                    self._decide(self._primary[shadow], rule.item, identifiers, shared=True)
                )
            except _GaveUp:
                pass  # count this one hit here; the mode is someone else's call
            except Exception as exc:  # any storage failure: count locally, never a 5xx
                self._lose(exc)
        return await self._decide(self._local[shadow], rule.local_item, identifiers, shared=False)

    async def _bounded(self, call: Coroutine[Any, Any, Decision]) -> Decision:
        # Not `asyncio.timeout`: that waits for the cancelled call to unwind, and redis-py's
        # unwinding (closing the connection, releasing it to the pool under a lock) queues
        # behind every other call cancelled in the same stall. The call runs in a task of its
        # own; when the request gives up, the task is cancelled behind it.
        loop = asyncio.get_running_loop()
        if self._outage is None or self._outage.done():
            self._outage = loop.create_future()
        outage = self._outage
        answers = self._answers
        task = asyncio.ensure_future(self._answered(call))
        start = loop.time()
        deadline = start + self.timeout
        try:
            while True:
                await asyncio.wait(
                    (task, outage),
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if task.done() or outage.done():
                    break
                now = loop.time()
                # A deadline that fires late is a busy loop's, not Redis's: the call may not have
                # had its time (not sent yet, or its answer in but unread). It gets the timeout
                # once more, up to a hard limit.
                if now - deadline < self.timeout * LATE or now - start >= self.timeout * LONGEST:
                    break
                deadline = now + self.timeout
        finally:
            if not task.done():  # deadline, outage, or the request itself was cancelled
                self._abandon(task)
        if task.done():
            error = task.exception()
            if error is None:
                return task.result()
            if not isinstance(error, Exception):
                raise error
            failure = error
        elif outage.done():
            raise _GaveUp("another call found the storage unavailable")
        else:
            failure = TimeoutError(f"no answer from the rate-limit storage within {self.timeout} s")
        if self._answers != answers:
            # Redis answered other calls meanwhile: this call was unlucky (a busy loop, a queue
            # for a pooled connection, one broken connection), Redis is not down.
            raise _GaveUp(f"{type(failure).__name__}; the storage answered others") from failure
        raise failure

    async def _answered(self, call: Coroutine[Any, Any, Decision]) -> Decision:
        decision = await call
        # Counted here, in the call's own task: an answer that came in while the loop was busy
        # is counted before a waiter whose deadline passed meanwhile looks (I/O callbacks run
        # before timers in an asyncio loop iteration).
        self._answers += 1
        return decision

    def _abandon(self, task: asyncio.Task[Decision]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _declare_outage(self) -> None:
        # Every call still waiting on the storage gives up now, not at its own deadline.
        if self._outage is not None and not self._outage.done():
            self._outage.set_result(None)

    def _forget(self, task: asyncio.Task[Decision]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the failure was already handled as a timeout

    @staticmethod
    async def _decide(
        strategy: FixedWindowRateLimiter,
        item: RateLimitItem,
        identifiers: tuple[str, ...],
        *,
        shared: bool,
    ) -> Decision:
        if await strategy.hit(item, *identifiers):
            return Decision(True, item.amount, 0.0, shared)
        # A refusal says when to come back: one more round trip, only for refused hits.
        stats = await strategy.get_window_stats(item, *identifiers)
        return Decision(False, item.amount, max(0.0, stats.reset_time - time.time()), shared)

    def _use_primary(self) -> bool:
        if self._shared:
            return True
        if self._clock() >= self._next_probe and (self._probe is None or self._probe.done()):
            self._probe = asyncio.create_task(self._run_probe(), name="rate-limit-redis-probe")
        return False

    def _lose(self, exc: BaseException) -> None:
        if not self._shared:
            return  # another request in flight saw the same outage: logged already
        self._shared = False
        self._declare_outage()
        now = self._clock()
        # Lost again soon after coming back (a flapping Redis, or a loop too busy to see its
        # answers in time): keep backing off instead of starting over.
        flapping = now - self._recovered_at < self._backoff_range[1]
        initial, longest = self._backoff_range
        self._backoff = min(self._backoff * 2, longest) if flapping else initial
        self._next_probe = now + self._backoff
        if self._gauge is not None:
            self._gauge.set(1)
        logger.warning(
            "rate limits: Redis unavailable (%s); counting per process until it answers again",
            type(exc).__name__ if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}",
        )

    async def _run_probe(self) -> None:
        assert self._primary_storage is not None
        try:
            async with asyncio.timeout(self.timeout * 4):
                alive = await self._primary_storage.check()
        except Exception:  # a probe that fails is the expected case during an outage
            alive = False
        if alive:
            self._shared = True
            self._recovered_at = self._clock()
            if self._gauge is not None:
                self._gauge.set(0)
            logger.warning("rate limits: Redis is back; counting in Redis again")
            return
        self._backoff = min(self._backoff * 2, self._backoff_range[1])
        self._next_probe = self._clock() + self._backoff

    async def aclose(self) -> None:
        """Stop the probe and the abandoned calls still unwinding (lifespan exit)."""
        pending = [*self._abandoned, *([self._probe] if self._probe is not None else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
