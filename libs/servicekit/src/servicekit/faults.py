"""Fault injection at runtime: make a service fail, slow down or hang on purpose.

Breakers, timeouts, retries and canaries are only believable once they have been seen to fire.
A service that opts in keeps one `FaultInjector` in its lifespan state, applies it to its
domain routes with the `inject_faults` dependency and mounts `faults_router`::

    PUT    /internal/faults   {"error_rate": 0.5, "latency_ms": 200, "hang": false}
    GET    /internal/faults   the faults in force
    DELETE /internal/faults   back to none

The routes sit behind the service credential like every internal route; the gateway exposes
them to operators as `/admin/faults/{service}`. Health, metrics and these routes themselves are
never faulted, so an operator can always look and undo.

A request applies the faults in this order: hang (until the hang is cleared, bounded), then
the added latency, then the error draw (503 `injected-fault` with `Retry-After`). Randomness
and sleep are injected so tests are deterministic and never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from servicekit.errors import UnavailableError, problem_responses
from servicekit.fields import WholeNumber

logger = logging.getLogger("servicekit.faults")

Sleep = Callable[[float], Awaitable[None]]

#: Longest latency one can inject: long enough to outlast any sane caller timeout.
MAX_LATENCY_MS = 60_000
#: A hang is bounded so a forgotten knob never pins a task for good; clearing the hang
#: releases the requests it holds at once.
HANG_SECONDS = 3600.0


class Faults(BaseModel):
    """The faults a service applies to its domain routes (also the body of the fault API)."""

    # Strict: "yes" is not a bool and 0.5 is not a latency; an operator's typo is refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of calls answered 503 injected-fault."
    )
    # WholeNumber: 250.0 is the JSON integer 250 (schemathesis sends it), 250.5 is refused.
    latency_ms: WholeNumber = Field(
        default=0, ge=0, le=MAX_LATENCY_MS, description="Delay added to every call."
    )
    hang: bool = Field(
        default=False,
        description="Hold every call until the hang is cleared (bounded), as a dead peer would.",
    )

    @property
    def active(self) -> bool:
        """True if any fault is set."""
        return self.error_rate > 0 or self.latency_ms > 0 or self.hang


class FaultSettings(Protocol):
    """The `<P>_FAULT_*` settings a service reads its start-up faults from."""

    @property
    def fault_error_rate(self) -> float: ...
    @property
    def fault_latency_ms(self) -> int: ...
    @property
    def fault_hang(self) -> bool: ...


class InjectedFaultError(UnavailableError):
    """The error an injected fault answers with (503, `Retry-After: 1`)."""

    slug = "injected-fault"
    title = "Injected fault"


class FaultInjector:
    """The faults one service applies now, replaced as a whole at runtime.

    A request reads the `Faults` once, so a change never mixes old and new knobs in one call.
    """

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        service: str,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.service = service
        self._faults = faults or Faults()
        self._rng = rng or random.Random()
        self._sleep = sleep
        # Set (and replaced) on every change: wakes the calls a hang is holding.
        self._changed = asyncio.Event()

    @classmethod
    def from_settings(
        cls, settings: FaultSettings, *, service: str, rng: random.Random | None = None
    ) -> FaultInjector:
        """An injector with the faults configured at start (`<P>_FAULT_*`)."""
        faults = Faults(
            error_rate=settings.fault_error_rate,
            latency_ms=settings.fault_latency_ms,
            hang=settings.fault_hang,
        )
        if faults.active:
            logger.warning("faults injected at start on %s: %s", service, faults.model_dump())
        return cls(faults, service=service, rng=rng)

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def set(self, faults: Faults) -> Faults:
        """Replace the faults; calls held by a hang are released to see the new ones."""
        previous, self._faults = self._faults, faults
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if faults != previous:
            log = logger.warning if faults.active else logger.info
            log("faults on %s: %s -> %s", self.service, previous.model_dump(), faults.model_dump())
        return faults

    def clear(self) -> Faults:
        """Remove every fault."""
        return self.set(Faults())

    async def apply(self) -> None:
        """Hang, then delay, then maybe raise `InjectedFaultError`."""
        faults = self._faults
        if faults.hang:
            faults = await self._hold()
        if faults.latency_ms > 0:
            await self._sleep(faults.latency_ms / 1000)
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            raise InjectedFaultError(
                f"fault injected on {self.service} (error_rate={faults.error_rate})", retry_after=1
            )

    async def _hold(self) -> Faults:
        # Wait while the hang is in force (bounded), then go on with the faults of that moment.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANG_SECONDS):
                while self._faults.hang:
                    await self._changed.wait()
        return self._faults


async def get_fault_injector(request: Request) -> FaultInjector:
    """The app's injector, from the lifespan state key `faults`."""
    injector: FaultInjector = request.state.faults
    return injector


FaultInjectorDep = Annotated[FaultInjector, Depends(get_fault_injector)]


async def inject_faults(injector: FaultInjectorDep) -> None:
    """Route dependency: apply the faults before the handler (and its DB session) runs."""
    await injector.apply()


faults_router = APIRouter(
    prefix="/internal/faults", tags=["faults"], responses=problem_responses(401, 422)
)


@faults_router.get("", response_model=Faults)
async def read_faults(injector: FaultInjectorDep) -> Faults:
    """Show the faults in force."""
    return injector.faults


@faults_router.put("", response_model=Faults)
async def replace_faults(body: Faults, injector: FaultInjectorDep) -> Faults:
    """Replace the faults (fields left out are off)."""
    return injector.set(body)


@faults_router.delete("", response_model=Faults)
async def clear_faults(injector: FaultInjectorDep) -> Faults:
    """Remove every fault."""
    return injector.clear()
