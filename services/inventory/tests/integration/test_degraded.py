"""Inventory under concurrency pressure: product reads come from the cache, marked degraded.

The concurrency limit is set to 4 (degraded from 2). Reservation lookups held by the `hang`
fault fill it; meanwhile a product read is answered from the cache (Redis, or the in-process
cache without Redis) with `X-Degraded: cache` and the stale `available` it had, a read with
nothing cached and a write get a fast 503, and once the pressure is gone reads are fresh again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from inventory.main import create_app
from servicekit import ConcurrencyLimiter
from servicekit.testing import lifespan_client

from .conftest import AUTH, Store, make_settings

#: A Redis database of its own: cache keys are named after the service, as in production.
REDIS_DB = 11


@pytest.fixture(
    params=[("postgresql", "redis"), ("postgresql", "memory"), ("sqlite", "memory")],
    ids=lambda p: "-".join(p),
)
async def setup(
    request: pytest.FixtureRequest, make_database: Any, redis_url: str
) -> AsyncIterator[tuple[str, str | None]]:
    kind, cache = request.param
    url: str = await make_database(kind, ["inventory"])
    if cache == "memory":
        yield url, None
        return
    cache_url = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    redis = aioredis.Redis.from_url(cache_url)
    try:
        keys = [k async for k in redis.scan_iter("servicekit:cache:inventory*")]
        if keys:
            await redis.delete(*keys)
        yield url, cache_url
    finally:
        await redis.aclose()


async def hold(client: httpx.AsyncClient, limiter: ConcurrencyLimiter, n: int) -> list[Any]:
    """`n` requests hung by the fault, returned once all are in flight."""
    target = limiter.in_flight + n
    tasks = [
        asyncio.ensure_future(client.get("/reservations", params={"order_id": str(uuid.uuid4())}))
        for _ in range(n)
    ]
    async with asyncio.timeout(10):
        while limiter.in_flight < target:
            await asyncio.sleep(0.01)
    return tasks


@pytest.mark.timeout(60)
async def test_degraded_product_reads_come_from_cache(setup: tuple[str, str | None]) -> None:
    url, cache_url = setup
    store = Store(url)
    await store.add_product("beans", stock=5)
    app = create_app(make_settings(url, redis_url=cache_url, max_concurrency=4, degrade_at=0.5))
    limiter: ConcurrencyLimiter = app.state.concurrency_limiter
    order = {"order_id": str(uuid.uuid4()), "items": [{"sku": "beans", "quantity": 1}]}
    try:
        async with lifespan_client(app, headers=AUTH) as client:
            before = await client.get("/products/beans")  # read, and cached
            assert (await client.post("/reservations", json=order)).status_code == 201
            await client.put("/internal/faults", json={"hang": True})

            held = await hold(client, limiter, 2)
            degraded = await client.get("/products/beans")
            held += await hold(client, limiter, 2)
            started = time.perf_counter()
            uncached = await client.get("/products/nothing-cached")
            write = await client.post("/reservations", json=order)
            shed_seconds = time.perf_counter() - started

            # The fault switch is never shed: it releases the hung requests at a full limit.
            assert (await client.delete("/internal/faults")).status_code == 200
            async with asyncio.timeout(10):
                assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 4
            async with asyncio.timeout(10):
                while limiter.degraded:
                    await asyncio.sleep(0.05)
            fresh = await client.get("/products/beans")
            metrics = (await client.get("/metrics")).text
        if cache_url is not None:
            redis = aioredis.Redis.from_url(cache_url)
            stored = await redis.exists("servicekit:cache:inventory:live:/products/beans?")
            await redis.aclose()
            assert stored == 1
    finally:
        await store.database.dispose()

    assert before.json()["available"] == 5 and "x-degraded" not in before.headers
    assert degraded.status_code == 200
    assert degraded.headers["x-degraded"] == "cache"
    # Stale on purpose: one unit was reserved after it was cached. That is what degraded means.
    assert degraded.json() == before.json()
    assert uncached.status_code == 503 and uncached.headers["retry-after"] == "1"
    assert write.status_code == 503
    assert shed_seconds < 1.0  # answered at once, not after the hung requests
    assert fresh.json()["available"] == 4 and "x-degraded" not in fresh.headers
    assert 'servicekit_degraded_responses_total{reason="cache"} 1.0' in metrics
    assert (
        'servicekit_shed_requests_total{reason="concurrency",tier="service",traffic="live"} 2.0'
        in metrics
    )
