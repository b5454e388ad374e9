"""The access tier on the real Redis: counts are shared by every gateway process.

Each test uses a key prefix of its own and deletes its keys at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from gateway.access import open_access_limits
from gateway.config import GatewaySettings
from gateway.main import create_app
from servicekit import Metrics
from servicekit.testing import lifespan_client

ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
TESTER = {"Authorization": "Bearer tester-key"}
DYED = TESTER | {"X-Shadow-Traffic": "1"}
KEYS = "alice-key:customer-alice,bob-key:customer-bob,tester-key:customer-tester:loadtest"


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201 if request.method == "POST" else 200, json={"ok": True})


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"test-limits-{secrets.token_hex(6)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = [*client.scan_iter(f"{name}:*"), *client.scan_iter(f"shadow:{name}:*")]
    if keys:
        client.delete(*keys)
    client.close()


def settings(redis_url: str, prefix: str, **limits: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "api_keys": KEYS,
        "service_token": "s3rvice-token-for-tests",
        "admin_token": "admin-token-for-tests",
        "redis_url": redis_url,
        "rate_limit_key_prefix": prefix,
        "global_rate_limit": "1000/hour",
        "client_rate_limit": "1000/hour",
        "checkout_rate_limit": "1000/hour",
        **limits,
    }
    return GatewaySettings(_env_file=None, **values)


async def gateways(
    stack: AsyncExitStack, count: int, s: GatewaySettings
) -> list[httpx.AsyncClient]:
    """`count` gateway apps ("processes") sharing one Redis."""
    return [
        await stack.enter_async_context(
            lifespan_client(create_app(s, transport=httpx.MockTransport(ok)))
        )
        for _ in range(count)
    ]


async def test_client_limit_is_shared_by_every_gateway_process(redis_url: str, prefix: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await gateways(stack, 2, settings(redis_url, prefix, client_rate_limit="4/minute"))
        statuses = [
            (await client.get("/api/products", headers=ALICE)).status_code
            for client in (a, b, a, b, a, b)
        ]
        refused = await b.get("/api/products", headers=ALICE)
        other = await a.get("/api/products", headers=BOB)
    # In process memory each would have allowed 4: together they allowed 4.
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert refused.headers["ratelimit-limit"] == "4"
    assert 1 <= int(refused.headers["ratelimit-reset"]) <= 60
    assert other.status_code == 200


async def test_global_limit_is_shared_and_answers_503(redis_url: str, prefix: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await gateways(stack, 2, settings(redis_url, prefix, global_rate_limit="3/minute"))
        statuses = [
            (await client.get("/api/products", headers=key)).status_code
            for client, key in ((a, ALICE), (b, BOB), (a, BOB), (b, ALICE))
        ]
        refused = await a.get("/api/products", headers=ALICE)
    assert statuses == [200, 200, 200, 503]
    assert refused.status_code == 503
    assert refused.json()["type"] == "/problems/gateway-rate-limited"
    assert "retry-after" in refused.headers


async def test_checkout_limit_is_shared_per_customer(redis_url: str, prefix: str) -> None:
    s = settings(redis_url, prefix, checkout_rate_limit="2/minute", rate_limit_processes=2)
    async with AsyncExitStack() as stack:
        a, b = await gateways(stack, 2, s)

        async def checkout(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
            response = await client.post(
                "/api/orders",
                json={"items": [{"sku": "mug", "quantity": 1}]},
                headers=headers | {"Idempotency-Key": secrets.token_hex(4)},
            )
            return response.status_code

        alice = [await checkout(c, ALICE) for c in (a, b, a)]
        bob = await checkout(b, BOB)
    # While Redis answers, the whole limit is shared (not each process's half).
    assert alice == [201, 201, 429]
    assert bob == 201


async def test_counts_live_under_the_configured_prefix(redis_url: str, prefix: str) -> None:
    async with AsyncExitStack() as stack:
        (a,) = await gateways(stack, 1, settings(redis_url, prefix))
        await a.get("/api/products", headers=ALICE)
        assert (await a.get("/metrics")).text.count("servicekit_rate_limit_fallback 0.0") == 1
    client = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(f"{prefix}:*"))
    finally:
        client.close()
    assert len(keys) == 2  # the client and the global counter
    assert any("customer-alice" in k for k in keys)


async def test_counts_through_the_asyncio_redis_client(redis_url: str, prefix: str) -> None:
    # The gap slowapi leaves (sync storage calls): here every Redis call is awaited.
    async with open_access_limits(
        settings(redis_url, prefix), metrics=Metrics("gateway")
    ) as access:
        storage = access.limiter._primary_storage
        assert storage is not None
        assert isinstance(storage.bridge.storage, redis.asyncio.Redis)  # type: ignore[attr-defined]
        assert (await access.limiter.hit(access.policy.global_rule, "global")).shared


def values(redis_url: str, pattern: str) -> dict[str, bytes | None]:
    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode(): client.get(k) for k in client.scan_iter(pattern)}
    finally:
        client.close()


async def test_dyed_traffic_counts_under_the_shadow_prefix_and_spends_no_live_budget(
    redis_url: str, prefix: str
) -> None:
    async with AsyncExitStack() as stack:
        (a,) = await gateways(stack, 1, settings(redis_url, prefix, client_rate_limit="2/minute"))
        assert (await a.get("/api/products", headers=TESTER)).status_code == 200
        live = values(redis_url, f"{prefix}:*")
        dyed = [(await a.get("/api/products", headers=DYED)).status_code for _ in range(3)]
        live_after = values(redis_url, f"{prefix}:*")
        shadow = values(redis_url, f"shadow:{prefix}:*")
        # The live count of this client (1 of 2) was neither spent nor touched by the dyed run.
        second_live = (await a.get("/api/products", headers=TESTER)).status_code
    assert dyed == [200, 200, 429]
    assert live_after == live and len(live) == 2  # the client's and the global counter
    # Every dyed hit counted there: 3 by the client, 2 (the admitted ones) globally.
    assert {k.split("/")[1]: v for k, v in shadow.items()} == {"client": b"3", "global": b"2"}
    assert second_live == 200
