"""HTTP edges of the order API: credentials, customer, idempotency key, ownership."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BODY = {"items": [{"sku": "SKU-1", "quantity": 1}]}


async def test_refuses_calls_without_the_service_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders", json=BODY, headers={"X-Service-Token": "wrong", "Idempotency-Key": "k"}
    )
    assert response.status_code == 401


async def test_requires_a_customer(client: httpx.AsyncClient, count: Any) -> None:
    client.headers.pop("X-Customer-ID")
    response = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert await count("idempotency_record") == 0


async def test_requires_an_idempotency_key(client: httpx.AsyncClient, count: Any) -> None:
    response = await client.post("/orders", json=BODY)
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/missing-idempotency-key"
    assert await count("customer_order") == 0


@pytest.mark.parametrize("key", [b"x" * 256, b"tab\there", "é".encode()])
async def test_rejects_malformed_idempotency_keys(client: httpx.AsyncClient, key: bytes) -> None:
    response = await client.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-idempotency-key"


async def test_hides_other_customers_orders(client: httpx.AsyncClient) -> None:
    created = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "k"})
    order_id = created.json()["id"]
    response = await client.get(f"/orders/{order_id}", headers={"X-Customer-ID": "cust-2"})
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/order-not-found"


@pytest.mark.parametrize(
    "order_id", ["not-a-uuid", "1" * 300, "00000000-0000-0000-0000-000000000000"]
)
async def test_unknown_or_malformed_order_ids_are_not_found(
    client: httpx.AsyncClient, order_id: str
) -> None:
    response = await client.get(f"/orders/{order_id}")
    assert response.status_code == 404


async def test_same_key_for_two_customers_is_two_orders(client: httpx.AsyncClient) -> None:
    first = await client.post("/orders", json=BODY, headers={"Idempotency-Key": "shared"})
    second = await client.post(
        "/orders", json=BODY, headers={"Idempotency-Key": "shared", "X-Customer-ID": "cust-2"}
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
