"""Breaker webhook: POST every state change to `<PREFIX>_BREAKER_WEBHOOK_URL`, off the hot path.

The breaker only records the change (a dict write, no I/O, inside its lock); one background
task delivers it. The JSON body::

    {"service": "order", "dependency": "payment", "from_state": "closed", "to_state": "open",
     "reason": "failure_rate", "failure_rate": 62.5, "slow_call_rate": 0.0,
     "at": "2026-11-26T15:04:05.123456+00:00", "recovered": false, "transitions": 1}

- Retries: a failed delivery (transport error, timeout, 408, 429, 5xx) is retried with
  exponential backoff and full jitter, `attempts` times in all; another 4xx is not retried.
- De-duplication when the breaker flaps: at most one pending notice per dependency and the
  latest state wins; notices for one dependency are at least `min_interval` apart; a flap that
  ends where the receiver already is (open -> half-open -> open) sends nothing. `from_state`
  is the state the receiver was last told, and `transitions` counts the changes folded in.
- Recovery: closing is a notice like any other (`"recovered": true`), delayed by
  `min_interval` at most, never dropped by de-duplication.
- A change another worker made (reason "shared", see `breaker_registry`) is not sent:
  the worker that tripped the breaker sends it.
- On shutdown, what is pending is sent without waiting for `min_interval`, within `grace`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import httpx

from servicekit.downstream.breaker import CLOSED, AsyncCircuitBreaker, BreakerListener, Transition

logger = logging.getLogger("servicekit.downstream.webhook")

_RETRYABLE = frozenset({408, 429})


class BreakerWebhook(BreakerListener):
    """A breaker listener that notifies a webhook in the background."""

    def __init__(
        self,
        url: str,
        *,
        service: str,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        min_interval: float = 5.0,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.service = service
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.min_interval = min_interval
        self.timeout = timeout
        self._transport = transport
        self._rng = rng or random.Random()
        self._clock = clock
        self._pending: dict[str, Transition] = {}
        self._folded: dict[str, int] = {}
        self._told: dict[str, str] = {}
        self._sent_at: dict[str, float] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Notices delivered and given up (for tests and logs).
        self.delivered = 0
        self.failed = 0

    def transition(self, breaker: AsyncCircuitBreaker, event: Transition) -> None:
        if event.reason == "shared" or self._closing:
            return
        self._pending[event.dependency] = event
        self._folded[event.dependency] = self._folded.get(event.dependency, 0) + 1
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                # Changed outside a loop (an operator's script): it goes with the next notice.
                return
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="breaker-webhook")
        assert self._wake is not None
        self._wake.set()

    async def aclose(self, grace: float = 2.0) -> None:
        """Send what is pending (ignoring `min_interval`) within `grace` seconds, then stop."""
        self._closing = True
        task = self._task
        if task is None:
            return
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            logger.warning("breaker webhook: %d notice(s) unsent at shutdown", len(self._pending))
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _run(self) -> None:
        assert self._wake is not None
        async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as client:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                dependency, wait = self._next_due()
                if wait > 0 and not self._closing:
                    # Woken early by a new notice or by shutdown; then look again.
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    self._wake.clear()
                    continue
                await self._send(client, dependency)

    def _next_due(self) -> tuple[str, float]:
        now = self._clock()
        due = {
            dep: self._sent_at.get(dep, -float("inf")) + self.min_interval - now
            for dep in self._pending
        }
        dependency = min(due, key=due.__getitem__)
        return dependency, due[dependency]

    async def _send(self, client: httpx.AsyncClient, dependency: str) -> None:
        event = self._pending.pop(dependency)
        folded = self._folded.pop(dependency, 1)
        told = self._told.get(dependency, CLOSED)
        if event.to_state == told:
            return  # the breaker flapped back to what the receiver already knows
        payload: dict[str, Any] = {
            "service": self.service,
            "dependency": dependency,
            "from_state": told,
            "to_state": event.to_state,
            "reason": event.reason,
            "failure_rate": event.failure_rate,
            "slow_call_rate": event.slow_call_rate,
            "at": event.at.isoformat(),
            "recovered": event.to_state == CLOSED,
            "transitions": folded,
        }
        if await self._deliver(client, payload):
            self._told[dependency] = event.to_state
            self.delivered += 1
        else:
            self.failed += 1
        self._sent_at[dependency] = self._clock()

    async def _deliver(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> bool:
        for attempt in range(1, self.attempts + 1):
            try:
                response = await client.post(self.url, json=payload)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                problem = f"answered {response.status_code}"
                if response.status_code < 500 and response.status_code not in _RETRYABLE:
                    break
            if attempt < self.attempts:
                cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay = self._rng.uniform(0, cap)
                logger.info(
                    "breaker webhook attempt %d failed (%s); retrying in %.2fs",
                    attempt,
                    problem,
                    delay,
                )
                await asyncio.sleep(delay)
        logger.warning(
            "breaker webhook gave up on %s -> %s: %s",
            payload["dependency"],
            payload["to_state"],
            problem,
            extra={"webhook_payload": payload},
        )
        return False
