"""The must-show: 200 concurrent reservations for 10 units never oversell."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx


async def test_two_hundred_concurrent_reservations_sell_exactly_the_stock(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("last-ten", stock=10)

    async def reserve_one() -> httpx.Response:
        return await client.post(
            "/reservations",
            json={"order_id": str(uuid.uuid4()), "items": [{"sku": "last-ten", "quantity": 1}]},
        )

    responses = await asyncio.gather(*(reserve_one() for _ in range(200)))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 409: 190}, statuses
    assert all(
        r.json()["type"] == "/problems/out-of-stock" for r in responses if r.status_code == 409
    )
    assert await store.levels("last-ten") == (10, 10)
    assert await store.count_reservations() == 10
    product = (await client.get("/products/last-ten")).json()
    assert product["available"] == 0


async def test_concurrent_multi_item_reservations_in_opposite_order_never_deadlock(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=30)
    await store.add_product("cups", stock=30)

    async def reserve(items: list[dict[str, Any]]) -> httpx.Response:
        return await client.post(
            "/reservations", json={"order_id": str(uuid.uuid4()), "items": items}
        )

    forward = [{"sku": "beans", "quantity": 1}, {"sku": "cups", "quantity": 1}]
    responses = await asyncio.gather(
        *(reserve(forward if i % 2 else forward[::-1]) for i in range(60))
    )

    assert Counter(r.status_code for r in responses) == {201: 30, 409: 30}
    assert await store.levels("beans") == (30, 30)
    assert await store.levels("cups") == (30, 30)
