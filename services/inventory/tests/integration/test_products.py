"""Product reads: keyset pagination with a bounded page size, and single products."""

from __future__ import annotations

from typing import Any

import httpx


async def test_pages_through_all_products_in_sku_order(
    client: httpx.AsyncClient, store: Any
) -> None:
    skus = [f"sku-{i:02d}" for i in range(7)]
    for sku in reversed(skus):
        await store.add_product(sku, stock=5)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/products", params=params)).json()
        seen += [p["sku"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == skus


async def test_product_shows_available_not_raw_stock(client: httpx.AsyncClient, store: Any) -> None:
    await store.add_product("beans", stock=20, price_cents=1250)
    await client.post(
        "/reservations",
        json={
            "order_id": "6f1c2a8e-8f0c-4c1e-9a55-0f3e2a7b9c10",
            "items": [{"sku": "beans", "quantity": 4}],
        },
    )

    product = (await client.get("/products/beans")).json()

    assert product == {
        "sku": "beans",
        "name": "beans",
        "price_cents": 1250,
        "currency": "USD",
        "available": 16,
    }


async def test_unknown_product_is_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/products/nope")
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/product-not-found"


async def test_page_size_is_bounded(client: httpx.AsyncClient) -> None:
    for limit in (0, 101, -1):
        response = await client.get("/products", params={"limit": limit})
        assert response.status_code == 422


async def test_malformed_cursor_and_sku_are_rejected(client: httpx.AsyncClient) -> None:
    assert (await client.get("/products", params={"cursor": "'; drop"})).status_code == 422
    assert (await client.get("/products/-bad")).status_code == 422
    assert (await client.get(f"/products/{'a' * 65}")).status_code == 422
