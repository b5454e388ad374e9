"""The read cache: TTL and LRU in memory, write generations, and failures that are only misses."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from servicekit.admission.cache import CachedAnswer, MemoryBackend, ReadCache, RedisBackend
from servicekit.testing import FakeClock


def counter() -> Counter:
    return Counter("c", "cache", ["cache", "result"], registry=CollectorRegistry())


def results(c: Counter) -> dict[str, float]:
    return {r: c.labels("products", r)._value.get() for r in ("hit", "miss", "error")}


async def test_memory_backend_expires_entries_by_ttl(fake_clock: FakeClock) -> None:
    backend = MemoryBackend(clock=fake_clock)
    await backend.set("k", b"v", ttl=2)
    fake_clock.advance(1.9)
    assert await backend.get_many(["k", "other"]) == [b"v", None]
    fake_clock.advance(0.2)
    assert await backend.get_many(["k"]) == [None]
    assert len(backend) == 0


async def test_memory_backend_evicts_least_recently_used(fake_clock: FakeClock) -> None:
    backend = MemoryBackend(max_entries=2, clock=fake_clock)
    await backend.set("a", b"1", ttl=10)
    await backend.set("b", b"2", ttl=10)
    await backend.get_many(["a"])  # a is now the most recent
    await backend.set("c", b"3", ttl=10)
    assert await backend.get_many(["a", "b", "c"]) == [b"1", None, b"3"]


def test_answer_round_trips_and_foreign_values_are_refused() -> None:
    answer = CachedAnswer(b'{"a":\n1}', "application/json", 12.5, generation=7)
    assert CachedAnswer.decode(answer.encode()) == answer
    for raw in (b"", b"garbage", b"x y\nct\nbody", b"1\nct\nbody"):
        assert CachedAnswer.decode(raw) is None


async def test_fresh_answer_is_a_hit_until_ttl_then_only_degraded_reads_get_it(
    fake_clock: FakeClock,
) -> None:
    c = counter()
    cache = ReadCache(
        MemoryBackend(clock=fake_clock),
        name="products",
        ttl=1,
        stale=60,
        counter=c,
        clock=fake_clock,
    )
    answer, generation = await cache.lookup("k", degraded=False)
    assert answer is None and generation == 0
    await cache.store("k", b"body", "application/json", generation)

    hit, _ = await cache.lookup("k", degraded=False)
    assert hit is not None and hit.body == b"body"
    fake_clock.advance(5)
    assert (await cache.lookup("k", degraded=False))[0] is None
    stale, _ = await cache.lookup("k", degraded=True)
    assert stale is not None and cache.age(stale) == 5
    fake_clock.advance(60)
    assert (await cache.lookup("k", degraded=True))[0] is None
    assert results(c) == {"hit": 2, "miss": 3, "error": 0}


async def test_a_write_makes_every_stored_answer_stale(fake_clock: FakeClock) -> None:
    cache = ReadCache(
        MemoryBackend(clock=fake_clock), name="products", ttl=10, stale=60, clock=fake_clock
    )
    _, generation = await cache.lookup("k", degraded=False)
    assert generation is not None
    await cache.store("k", b"before the write", "application/json", generation)

    await cache.invalidate()

    answer, newer = await cache.lookup("k", degraded=False)
    assert answer is None and newer == generation + 1
    degraded, _ = await cache.lookup("k", degraded=True)
    assert degraded is not None and degraded.body == b"before the write"


async def test_answer_read_before_a_write_is_never_fresh(fake_clock: FakeClock) -> None:
    # A read that saw generation g, then a write, then its store: the stored answer may hold
    # pre-write data, so it must not be served as fresh.
    cache = ReadCache(
        MemoryBackend(clock=fake_clock), name="products", ttl=10, stale=60, clock=fake_clock
    )
    _, generation = await cache.lookup("k", degraded=False)
    assert generation is not None
    await cache.invalidate()
    await cache.store("k", b"maybe old", "application/json", generation)
    assert (await cache.lookup("k", degraded=False))[0] is None


class FailingRedis:
    """Stands in for a dead Redis: every command raises, and the calls are counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def _fail(self, *_: Any, **__: Any) -> Any:
        self.calls += 1
        raise RedisConnectionError("connection refused")

    mget = set = incr = _fail


async def test_redis_failure_is_a_miss_and_cools_down(fake_clock: FakeClock) -> None:
    redis = FailingRedis()
    c = counter()
    cache = ReadCache(
        RedisBackend(redis, cooldown=1.0, clock=fake_clock),  # type: ignore[arg-type]
        name="products",
        ttl=1,
        stale=60,
        counter=c,
    )
    assert await cache.lookup("k", degraded=False) == (None, None)
    await cache.store("k", b"x", "application/json", 0)
    await cache.invalidate()
    assert await cache.lookup("k", degraded=True) == (None, None)
    assert redis.calls == 1  # the rest were skipped during the cool-down
    fake_clock.advance(1.0)
    assert await cache.lookup("k", degraded=False) == (None, None)
    assert redis.calls == 2
    assert results(c) == {"hit": 0, "miss": 0, "error": 3}


class StalledRedis:
    """A Redis that never answers."""

    async def mget(self, *_: Any) -> Any:
        import asyncio

        await asyncio.Event().wait()


@pytest.mark.timeout(5)
async def test_stalled_redis_gives_up_after_the_cache_timeout() -> None:
    cache = ReadCache(
        RedisBackend(StalledRedis(), timeout=0.01),  # type: ignore[arg-type]
        name="products",
        ttl=1,
        stale=60,
    )
    assert await cache.lookup("k", degraded=False) == (None, None)
