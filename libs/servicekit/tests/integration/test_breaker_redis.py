"""Breakers shared between workers through the real Redis, and working alone without it.

Two `Breakers` registries stand for two worker processes of one service.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from servicekit import BreakerConfig, Breakers, CircuitOpenError, create_redis
from servicekit.downstream.breaker_registry import SharedBreakerState

pytestmark = pytest.mark.redis

CONFIG = BreakerConfig(consecutive_failures=1, reset_seconds=5, half_open_probes=1)


async def fail() -> None:
    raise ConnectionError("payment is down")


async def ok() -> str:
    return "ok"


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


@pytest.fixture
async def service() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, name="breaker-test")
    yield client
    await client.aclose()


async def worker(redis: Redis, service: str) -> Breakers:
    shared = SharedBreakerState(redis, service=service, interval=0.05)
    breakers = Breakers(service, CONFIG, shared=shared)
    await breakers.start()
    return breakers


async def test_a_breaker_opened_by_one_worker_opens_in_the_others(
    redis: Redis, service: str
) -> None:
    one, two = await worker(redis, service), await worker(redis, service)
    try:
        tripped, follower = one.get("payment"), two.get("payment")
        with pytest.raises(ConnectionError):
            await tripped.call_async(fail)

        await until(lambda: follower.current_state == "open")
        assert follower.last_transition is not None
        assert follower.last_transition.reason == "shared"
        called = False

        async def spy() -> None:
            nonlocal called
            called = True

        with pytest.raises(CircuitOpenError) as info:
            await follower.call_async(spy)
        assert not called and int(info.value.headers["Retry-After"]) <= 5

        key = f"servicekit:breaker:{service}:payment"
        entry = json.loads(await redis.get(key) or b"{}")
        assert entry["by"] == one.shared.instance  # type: ignore[union-attr]
        assert 0 < await redis.pttl(key) <= 5000  # expires when the breaker half-opens

        # The worker that recovers first clears the shared entry.
        tripped.close(reason="probes_succeeded")
        await until(lambda: tripped.current_state == "closed")
        deadline = time.monotonic() + 5
        while await redis.exists(key):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        # An unrelated dependency was never touched.
        assert two.get("inventory").current_state == "closed"
    finally:
        await one.aclose()
        await two.aclose()


async def test_without_redis_each_worker_decides_alone_and_calls_never_wait(
    service: str,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: Redis is unreachable
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = create_redis(f"redis://127.0.0.1:{port}/0", name="breaker-test")
    breakers = await worker(dead, service)
    try:
        breaker = breakers.get("payment")
        started = time.perf_counter()
        for _ in range(50):
            await breaker.call_async(ok)
        assert time.perf_counter() - started < 0.5
        with pytest.raises(ConnectionError):
            await breaker.call_async(fail)
        assert breaker.current_state == "open"
        await asyncio.sleep(0.2)  # several failed sync rounds
        assert breakers.shared is not None and not breakers.shared._healthy
        with pytest.raises(CircuitOpenError):
            await breaker.call_async(ok)
    finally:
        await breakers.aclose()
        await dead.aclose()


def test_redis_storage_needs_a_redis_url() -> None:
    from servicekit import ServiceSettings

    with pytest.raises(ValueError, match="BREAKER_STORAGE=redis needs"):
        ServiceSettings(breaker_storage="redis", _env_file=None)  # type: ignore[call-arg]


async def test_from_settings_shares_through_redis(redis_url: str, service: str) -> None:
    from servicekit import ServiceSettings

    values = {"breaker_storage": "redis", "redis_url": redis_url}
    settings = ServiceSettings(**values, _env_file=None)  # type: ignore[arg-type]
    breakers = Breakers.from_settings(settings)
    await breakers.start()
    try:
        assert breakers.shared is not None
        assert breakers.get("payment") is breakers.get("payment")
        assert await breakers.shared.redis.ping()
    finally:
        await breakers.aclose()
