"""Faults set at runtime hit product reads and reservations; health and metrics stay untouched."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx


async def test_error_rate_fails_reads_and_reservations_then_clears(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=5)
    assert (await client.put("/internal/faults", json={"error_rate": 1.0})).status_code == 200
    order = {"order_id": str(uuid.uuid4()), "items": [{"sku": "beans", "quantity": 1}]}
    for response in (
        await client.get("/products"),
        await client.get("/products/beans"),
        await client.post("/reservations", json=order),
    ):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"] == "/problems/injected-fault"
    for path in ("/healthz", "/readyz", "/metrics", "/internal/faults"):
        assert (await client.get(path)).status_code == 200, path
    assert await store.levels("beans") == (5, 0)  # the refused reservation held nothing

    assert (await client.delete("/internal/faults")).json()["error_rate"] == 0.0
    assert (await client.post("/reservations", json=order)).status_code == 201
    assert await store.levels("beans") == (5, 1)


async def test_injected_latency_slows_product_reads_only(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=5)
    await client.put("/internal/faults", json={"latency_ms": 200})
    start = time.perf_counter()
    assert (await client.get("/products/beans")).status_code == 200
    slow = time.perf_counter() - start
    start = time.perf_counter()
    assert (await client.get("/healthz")).status_code == 200
    fast = time.perf_counter() - start
    assert slow >= 0.2
    assert fast < 0.2


async def test_start_up_faults_come_from_inventory_env(app_client: Any) -> None:
    async with app_client(fault_error_rate=1.0) as client:
        assert (await client.get("/products")).status_code == 503
        assert (await client.get("/internal/faults")).json()["error_rate"] == 1.0


async def test_fault_api_needs_the_credential_and_a_valid_body(app_client: Any) -> None:
    async with app_client(headers={}) as anonymous:
        assert (await anonymous.put("/internal/faults", json={"hang": True})).status_code == 401
    async with app_client() as client:
        bad = await client.put("/internal/faults", json={"latency_ms": -1})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert (await client.get("/internal/faults")).json()["latency_ms"] == 0
