"""The checkout saga through POST /orders, on SQLite with faked inventory and payment."""

from __future__ import annotations

from typing import Any

import httpx

ONE = {"items": [{"sku": "SKU-1", "quantity": 2}]}


async def post(client: httpx.AsyncClient, body: Any, key: str = "k-1") -> httpx.Response:
    return await client.post("/orders", json=body, headers={"Idempotency-Key": key})


async def test_confirms_order_with_reserved_prices(
    client: httpx.AsyncClient, inventory: Any, payment: Any
) -> None:
    response = await post(
        client, {"items": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}]}
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["items"] == [
        {"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1250},
        {"sku": "SKU-2", "quantity": 1, "unit_price_cents": 500},
    ]
    assert order["total_cents"] == 3000
    assert order["currency"] == "USD"
    assert order["created_at"].endswith("Z")
    assert inventory.statuses() == ["committed"]
    assert payment.statuses() == ["succeeded"]
    read = await client.get(f"/orders/{order['id']}")
    assert read.status_code == 200
    assert read.json() == order


async def test_replays_the_stored_bytes_for_the_same_key(
    client: httpx.AsyncClient, payment: Any
) -> None:
    first = await post(client, ONE)
    again = await post(client, ONE)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["content-type"] == "application/json"
    assert len(payment.charges) == 1


async def test_rejects_a_reused_key_with_another_body(client: httpx.AsyncClient) -> None:
    await post(client, ONE)
    response = await post(client, {"items": [{"sku": "SKU-1", "quantity": 3}]})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"


async def test_stores_out_of_stock_and_replays_it(client: httpx.AsyncClient, payment: Any) -> None:
    body = {"items": [{"sku": "SKU-2", "quantity": 6}]}
    first = await post(client, body)
    assert first.status_code == 409
    assert first.headers["content-type"] == "application/problem+json"
    assert first.json()["type"] == "/problems/out-of-stock"
    again = await post(client, body)
    assert (again.status_code, again.content) == (409, first.content)
    assert payment.calls == []


async def test_answers_422_for_an_unknown_sku(client: httpx.AsyncClient) -> None:
    response = await post(client, {"items": [{"sku": "NOPE", "quantity": 1}]})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/unknown-sku"


async def test_releases_reservation_when_payment_declined(
    client: httpx.AsyncClient, inventory: Any, payment: Any
) -> None:
    response = await post(client, {"items": [{"sku": "PRICEY", "quantity": 1}]})
    assert response.status_code == 402
    assert response.json()["type"] == "/problems/payment-declined"
    assert inventory.statuses() == ["released"]
    assert inventory.available["PRICEY"] == 10
    assert payment.statuses() == ["declined"]


async def test_inventory_down_answers_503_and_frees_the_key(
    client: httpx.AsyncClient, inventory: Any, count: Any
) -> None:
    inventory.down = True
    response = await post(client, ONE)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert await count("idempotency_record") == 0
    inventory.down = False
    retried = await post(client, ONE)
    assert retried.status_code == 201


async def test_payment_down_releases_stock_and_retry_succeeds(
    client: httpx.AsyncClient, inventory: Any, payment: Any
) -> None:
    payment.down = True
    response = await post(client, ONE)
    assert response.status_code == 503
    assert inventory.statuses() == ["released"]
    payment.down = False
    retried = await post(client, ONE)
    assert retried.status_code == 201
    assert payment.statuses() == ["succeeded"]


async def test_refunds_when_the_reservation_expired_before_commit(
    client: httpx.AsyncClient, inventory: Any, payment: Any, count: Any
) -> None:
    original = inventory._transition

    def expire_then_commit(reservation_id: str, action: str) -> httpx.Response:
        if action == "commit":
            inventory.expire(reservation_id)
        return original(reservation_id, action)

    inventory._transition = expire_then_commit
    response = await post(client, ONE)
    assert response.status_code == 503
    assert payment.statuses() == ["refunded"]
    assert await count("idempotency_record") == 0


async def test_keeps_key_in_flight_when_commit_is_unreachable(
    client: httpx.AsyncClient, inventory: Any, payment: Any
) -> None:
    inventory.commit_down = True
    response = await post(client, ONE)
    assert response.status_code == 503
    retried = await post(client, ONE)
    assert retried.status_code == 409
    assert retried.json()["type"] == "/problems/request-in-flight"
    assert retried.headers["retry-after"] == "1"
    assert payment.statuses() == ["succeeded"]
    assert inventory.statuses() == ["held"]
