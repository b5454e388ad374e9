"""Fault injection: error rate, added latency and hang, read from settings at start.

The `Faults` object lives in the lifespan state and is mutable on purpose, so a later runtime
admin API can turn the knobs without a restart. Randomness and sleep are injected so tests
are deterministic and never wait.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from payment.config import PaymentSettings
from payment.exceptions import InjectedFaultError

Sleep = Callable[[float], Awaitable[None]]

#: A hang is bounded so a forgotten knob never pins a task forever; any sane caller
#: timeout fires long before.
HANG_SECONDS = 3600.0


@dataclass
class Faults:
    """The fault-injection knobs applied to every /charges* call."""

    error_rate: float = 0.0
    latency_ms: int = 0
    hang: bool = False

    @classmethod
    def from_settings(cls, settings: PaymentSettings) -> Faults:
        return cls(settings.fault_error_rate, settings.fault_latency_ms, settings.fault_hang)

    async def apply(self, rng: random.Random, sleep: Sleep = asyncio.sleep) -> None:
        """Hang, then delay, then maybe fail with 503 "injected-fault"."""
        if self.hang:
            await sleep(HANG_SECONDS)
        if self.latency_ms > 0:
            await sleep(self.latency_ms / 1000)
        if self.error_rate > 0 and rng.random() < self.error_rate:
            raise InjectedFaultError("fault injected by PAYMENT_FAULT_ERROR_RATE", retry_after=1)
