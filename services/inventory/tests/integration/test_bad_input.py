"""Bad input and missing credentials: a 4xx problem, and nothing written."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

PROBLEM = "application/problem+json"


def valid_body(**overrides: Any) -> dict[str, Any]:
    return {"order_id": str(uuid.uuid4()), "items": [{"sku": "beans", "quantity": 1}]} | overrides


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        (valid_body(items=[{"sku": "beans", "quantity": -1}]), 422),
        (valid_body(items=[{"sku": "beans", "quantity": 0}]), 422),
        (valid_body(items=[{"sku": "beans", "quantity": 1001}]), 422),
        (valid_body(items=[]), 422),
        (valid_body(surprise=True), 422),
        (valid_body(order_id="not-a-uuid"), 422),
        (valid_body(ttl_seconds=0), 422),
    ],
    ids=[
        "empty",
        "negative-quantity",
        "zero-quantity",
        "huge-quantity",
        "no-items",
        "unknown-field",
        "bad-order-id",
        "zero-ttl",
    ],
)
async def test_invalid_reservation_body_is_rejected_and_nothing_written(
    client: httpx.AsyncClient, store: Any, body: dict[str, Any], status: int
) -> None:
    await store.add_product("beans", stock=20)

    response = await client.post("/reservations", json=body)

    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert await store.count_reservations() == 0
    assert await store.levels("beans") == (20, 0)


async def test_duplicate_sku_is_rejected_with_a_clear_detail(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    body = valid_body(items=[{"sku": "beans", "quantity": 1}, {"sku": "beans", "quantity": 1}])

    response = await client.post("/reservations", json=body)

    assert response.status_code == 422
    assert "duplicate sku" in response.json()["detail"]
    assert await store.count_reservations() == 0


async def test_malformed_json_is_bad_request(client: httpx.AsyncClient, store: Any) -> None:
    response = await client.post(
        "/reservations", content=b'{"order_id": ', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert await store.count_reservations() == 0


async def test_oversized_body_is_refused(client: httpx.AsyncClient, store: Any) -> None:
    body = valid_body(padding="x" * 200_000)

    response = await client.post("/reservations", json=body)

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert await store.count_reservations() == 0


async def test_malformed_reservation_id_is_unprocessable(client: httpx.AsyncClient) -> None:
    for reservation_id in ("garbage", "123", "' OR 1=1 --", "0" * 300):
        for action in ("commit", "release"):
            response = await client.post(f"/reservations/{reservation_id}/{action}")
            assert response.status_code == 422, (reservation_id, response.text)
            assert response.headers["content-type"] == PROBLEM


async def test_list_reservations_requires_a_uuid_order_id(client: httpx.AsyncClient) -> None:
    assert (await client.get("/reservations")).status_code == 422
    assert (await client.get("/reservations", params={"order_id": "x"})).status_code == 422


@pytest.mark.parametrize(
    "headers", [{}, {"X-Service-Token": "wrong-token"}], ids=["missing", "wrong"]
)
async def test_calls_without_the_service_credential_are_unauthorized(
    app_client: Any, store: Any, headers: dict[str, str]
) -> None:
    await store.add_product("beans", stock=20)
    async with app_client(headers=headers) as client:
        create = await client.post("/reservations", json=valid_body())
        products = await client.get("/products")
        health = await client.get("/healthz")

    assert (create.status_code, products.status_code) == (401, 401)
    assert create.headers["content-type"] == PROBLEM
    assert health.status_code == 200
    assert await store.count_reservations() == 0
