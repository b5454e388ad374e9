"""The seed: idempotent, and never resets stock that orders already consumed."""

from __future__ import annotations

from typing import Any

import httpx
from inventory.seed import CATALOG, seed_catalog


async def test_seed_loads_catalog_once(store: Any) -> None:
    assert await seed_catalog(store.database) == len(CATALOG)
    assert await seed_catalog(store.database) == 0
    assert await store.levels("espresso-machine") == (100, 0)


async def test_seed_rerun_keeps_consumed_stock_and_adds_missing(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("mug-stoneware-350ml", stock=3)  # pre-existing, edited by hand
    await seed_catalog(store.database)
    reservation = (
        await client.post(
            "/reservations",
            json={
                "order_id": "0b7f4c9e-2a57-4e8c-9d0a-3e5b1c2d4f60",
                "items": [{"sku": "tea-sencha-100g", "quantity": 5}],
            },
        )
    ).json()
    await client.post(f"/reservations/{reservation['id']}/commit")

    assert await seed_catalog(store.database) == 0

    assert await store.levels("tea-sencha-100g") == (245, 0)
    assert await store.levels("mug-stoneware-350ml") == (3, 0)
    page = (await client.get("/products", params={"limit": 100})).json()
    assert len(page["items"]) == len(CATALOG)
    espresso = (await client.get("/products/espresso-machine")).json()
    assert espresso["price_cents"] == 129900
