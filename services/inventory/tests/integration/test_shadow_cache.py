"""The read cache keeps dyed traffic apart, on the real Redis and in the process.

Dyed reads and writes of products go through the same cache-aside as live ones; afterwards
every key they wrote carries the shadow prefix, every live key (answers and the generation
counter) is byte-identical, and the live answer is still served from cache.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from inventory.main import create_app
from inventory.seed import SHADOW_STOCK, seed_catalog, seed_shadow_catalog
from servicekit.admission.cache import MemoryBackend
from servicekit.data import shadow
from servicekit.testing import lifespan_client

from .conftest import AUTH, Store, make_settings

#: A Redis database of its own: cache keys are named after the service, as in production.
REDIS_DB = 12
DYED = {**AUTH, "X-Shadow-Traffic": "1"}
SKU = "mug-stoneware-350ml"


@pytest.fixture(params=["redis", "memory"])
async def cache_url(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[str | None]:
    if request.param == "memory":
        yield None
        return
    url = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    redis = aioredis.Redis.from_url(url)
    try:
        for pattern in ("servicekit:cache:inventory*", "shadow:servicekit:cache:inventory*"):
            keys = [k async for k in redis.scan_iter(pattern)]
            if keys:
                await redis.delete(*keys)
        yield url
    finally:
        await redis.aclose()


async def cached(app: Any, url: str | None) -> dict[str, bytes]:
    """Every entry of the app's read cache (answers and counters), by key."""
    backend = app.state.read_cache.backend
    if url is None:
        assert isinstance(backend, MemoryBackend)
        keys = [*backend._entries, *backend._counters]
        return dict(zip(keys, await backend.get_many(keys), strict=True))
    redis = aioredis.Redis.from_url(url)
    try:
        keys = [k.decode() async for k in redis.scan_iter("*servicekit:cache:inventory*")]
        return dict(zip(keys, await redis.mget(keys), strict=True)) if keys else {}
    finally:
        await redis.aclose()


def reservation() -> dict[str, Any]:
    return {"order_id": str(uuid.uuid4()), "items": [{"sku": SKU, "quantity": 1}]}


async def test_dyed_reads_and_writes_use_shadow_cache_keys_and_leave_live_ones(
    database_url: str, cache_url: str | None
) -> None:
    store = Store(database_url)
    await seed_catalog(store.database)
    await seed_shadow_catalog(store.database)
    await store.database.dispose()
    app = create_app(make_settings(database_url, redis_url=cache_url, cache_ttl_seconds=60))
    async with lifespan_client(app, headers=AUTH) as client:
        assert (await client.post("/reservations", json=reservation())).status_code == 201
        live = (await client.get(f"/products/{SKU}")).json()
        before = await cached(app, cache_url)

        dyed = (await client.get(f"/products/{SKU}", headers=DYED)).json()
        booked = await client.post("/reservations", json=reservation(), headers=DYED)
        dyed_after = (await client.get(f"/products/{SKU}", headers=DYED)).json()

        after = await cached(app, cache_url)
        live_again = await client.get(f"/products/{SKU}")

    # The dyed reads saw the shadow catalogue, never the live answer in the cache, and the
    # dyed write made the dyed answer stale at once (read your writes, per traffic kind).
    assert dyed["available"] == SHADOW_STOCK != live["available"]
    assert booked.status_code == 201
    assert dyed_after["available"] == SHADOW_STOCK - 1
    # Live keys untouched (the generation counter too); every new key is a shadow key.
    assert len(before) == 2 and not any(k.startswith(shadow.REDIS_PREFIX) for k in before)
    assert {k: v for k, v in after.items() if k in before} == before
    added = set(after) - set(before)
    assert len(added) == 2 and all(k.startswith(shadow.REDIS_PREFIX) for k in added), added
    # So the live answer is still fresh: served from cache, with its age.
    assert live_again.json() == live and "age" in live_again.headers
