"""Background jobs in a lifespan: run a job now and every `interval`, stop it gracefully.

Cancelling a job in the middle of a database call is how connections leak: the driver's
worker finishes after the event loop is gone (aiosqlite), or a half-done step is abandoned.
So shutdown first asks the loop to stop and lets the job in flight finish (up to `grace`
seconds); only a job that overruns is cancelled. A failing run is logged and retried on the
next tick; it never ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from servicekit import context

logger = logging.getLogger("servicekit.background")


@asynccontextmanager
async def run_periodically(
    job: Callable[[], Awaitable[object]],
    *,
    name: str,
    interval: float,
    first_delay: float = 0.0,
    grace: float = 5.0,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `job` after `first_delay`, then every `interval` seconds (0: once) until exit."""
    stop = asyncio.Event()

    async def wait(seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def loop() -> None:
        await wait(first_delay)
        while not stop.is_set():
            # Each run gets its own context, so its logs carry an id like a request's.
            with context.request_scope({context.REQUEST_ID: f"{name}-{secrets.token_hex(6)}"}):
                try:
                    await job()
                except Exception:
                    logger.exception("background job %s failed; retrying in %.1fs", name, interval)
            if interval <= 0:
                return
            await wait(interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            logger.warning("background job %s overran %.1fs at shutdown; cancelling", name, grace)
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
