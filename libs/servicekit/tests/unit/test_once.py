"""Once: exactly one construction under mixed thread and task pressure; failures retried."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from servicekit import Once


class Built:
    pass


async def test_ten_thousand_tasks_and_64_threads_build_exactly_once() -> None:
    calls = 0
    calls_lock = threading.Lock()

    async def factory() -> Built:
        nonlocal calls
        with calls_lock:
            calls += 1
        await asyncio.sleep(0.05)  # a slow construction widens the race window
        return Built()

    once: Once[Built] = Once(factory)
    start = threading.Barrier(65)
    thread_results: list[Built] = []

    def in_thread() -> None:
        start.wait()
        thread_results.append(asyncio.run(once.aget()))

    threads = [threading.Thread(target=in_thread) for _ in range(64)]
    for t in threads:
        t.start()
    await asyncio.to_thread(start.wait)
    task_results = await asyncio.gather(*(once.aget() for _ in range(10_000)))
    for t in threads:
        t.join()

    assert calls == 1
    assert once.constructions == 1
    everyone = {id(r) for r in [*task_results, *thread_results]}
    assert len(thread_results) == 64
    assert everyone == {id(once.peek())}


async def test_plain_factory_shared_by_threads_and_tasks_builds_once() -> None:
    calls = 0

    def factory() -> Built:
        nonlocal calls
        calls += 1
        time.sleep(0.02)
        return Built()

    once: Once[Built] = Once(factory)
    results: list[Built] = []
    threads = [threading.Thread(target=lambda: results.append(once.get())) for _ in range(64)]
    for t in threads:
        t.start()
    results.extend(await asyncio.gather(*(once.aget() for _ in range(1_000))))
    for t in threads:
        t.join()
    assert calls == 1
    assert len({id(r) for r in results}) == 1


async def test_failed_construction_is_not_cached_and_next_caller_retries() -> None:
    attempts = 0

    async def flaky() -> Built:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise ConnectionError("first connect fails")
        return Built()

    once: Once[Built] = Once(flaky)
    first = await asyncio.gather(*(once.aget() for _ in range(100)), return_exceptions=True)
    # Everyone who waited on the failed attempt saw its error; nothing half-built was published.
    assert all(isinstance(r, ConnectionError) for r in first)
    assert not once.is_set and once.peek() is None
    value = await once.aget()
    assert isinstance(value, Built)
    assert attempts == 2 and once.constructions == 1
    assert await once.aget() is value


def test_failed_plain_construction_is_retried_by_next_thread() -> None:
    outcomes = iter([RuntimeError("boom"), None])

    def factory() -> Built:
        error = next(outcomes)
        if error:
            raise error
        return Built()

    once: Once[Built] = Once(factory)
    with pytest.raises(RuntimeError):
        once.get()
    assert isinstance(once.get(), Built)


def test_reset_returns_old_value_and_rebuilds() -> None:
    once: Once[Built] = Once(Built)
    first = once.get()
    assert once.reset() is first
    assert once.get() is not first


def test_plain_get_refuses_async_factory() -> None:
    async def factory() -> Built:
        return Built()

    once: Once[Built] = Once(factory)
    with pytest.raises(TypeError, match="aget"):
        once.get()
    assert not once.is_set
