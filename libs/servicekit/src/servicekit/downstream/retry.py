"""Retries for outbound calls: only idempotent ones, with backoff, jitter and a budget.

Retries multiply a flood: when a dependency struggles, every caller retrying turns one
request into three. So a retry must pass four checks (`ServiceClient` applies them):

- the call is idempotent: GET/HEAD/OPTIONS/PUT/DELETE, or a POST the caller marks
  `idempotent=True` because it carries an `Idempotency-Key` (a payment charge);
- the failure is worth retrying: a transport error (refused, reset) or 502/503/504. A timeout
  is not: it already spent the call's whole budget and says the dependency is slow, not flaky.
  A 429, or a 503 whose `Retry-After` asks for more patience than `max_delay`, is the server
  asking us to back off, and is answered as is; a 500 is a bug a retry would only repeat;
- the delay, exponential with full jitter, ends before the request's deadline;
- the retry budget has a token: every request deposits `ratio` (0.1) tokens and every retry
  takes one, so retries stay below 10% of requests, plus a burst of `max_tokens` retries
  (the retry budgets of Finagle and gRPC work the same way).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

#: Methods safe to send twice (RFC 9110 idempotent methods).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Answers that say "try again" without blaming the request.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries; `rng` and `sleep` are injectable so tests never wait."""

    max_attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 0.5
    #: Tokens a request deposits into the budget; a retry costs one (0.1 = 10% retries).
    budget_ratio: float = 0.1
    #: Budget capacity, and its balance at start: the burst of retries a cold client may make.
    budget_max_tokens: float = 10.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if not 0 <= self.budget_ratio <= 1:
            raise ValueError("budget_ratio must be within 0..1")

    def is_idempotent(self, method: str) -> bool:
        """True for the methods retried without the caller saying so."""
        return method.upper() in IDEMPOTENT_METHODS

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based): full jitter over 2^n steps.

        Full jitter (a uniform draw between 0 and the exponential cap) spreads the retries
        of many callers that failed together, so they do not come back in one wave.
        """
        cap = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return self.rng.uniform(0, cap)

    def new_budget(self) -> RetryBudget:
        """A fresh budget with this policy's ratio and capacity."""
        return RetryBudget(ratio=self.budget_ratio, max_tokens=self.budget_max_tokens)


class RetryBudget:
    """A token bucket that keeps retries to `ratio` of requests (plus a small burst).

    Thread-safe; the lock guards two float operations and is never held across an await.
    """

    __slots__ = ("_lock", "max_tokens", "ratio", "tokens")

    def __init__(self, *, ratio: float = 0.1, max_tokens: float = 10.0) -> None:
        self.ratio = ratio
        self.max_tokens = max_tokens
        self.tokens = max_tokens
        self._lock = threading.Lock()

    def deposit(self) -> None:
        """Record one request (not a retry): it earns `ratio` of a retry."""
        with self._lock:
            self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True
