"""run_periodically: runs now and on every tick, survives failures, stops gracefully."""

from __future__ import annotations

import asyncio

import pytest
from servicekit import context, run_periodically


async def test_runs_at_once_then_every_interval_with_its_own_context() -> None:
    ids: list[str | None] = []

    async def job() -> None:
        ids.append(context.get(context.REQUEST_ID))

    async with run_periodically(job, name="tick", interval=0.01):
        await asyncio.sleep(0.055)
    assert 3 <= len(ids) <= 8
    assert all(i and i.startswith("tick-") for i in ids) and len(set(ids)) == len(ids)


async def test_interval_zero_runs_once() -> None:
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1

    async with run_periodically(job, name="once", interval=0) as task:
        await asyncio.sleep(0.02)
        assert task.done()
    assert runs == 1


async def test_a_failing_run_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("database restarting")

    async with run_periodically(job, name="flaky", interval=0.01):
        await asyncio.sleep(0.05)
    assert runs >= 2
    assert "background job flaky failed" in caplog.text


async def test_shutdown_lets_the_run_in_flight_finish() -> None:
    finished = asyncio.Event()
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(0.05)  # a database call that must not be cut in half
        finished.set()

    async with run_periodically(job, name="slow", interval=10, grace=1):
        await started.wait()
    assert finished.is_set()


async def test_a_run_overrunning_the_grace_period_is_cancelled() -> None:
    cancelled = False

    async def job() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled = True
            raise

    async with run_periodically(job, name="stuck", interval=10, grace=0.05) as task:
        await asyncio.sleep(0.01)
    assert cancelled and task.cancelled()
