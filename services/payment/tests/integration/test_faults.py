"""Injected faults hit /charges* only; health, metrics and /internal/faults stay untouched."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

BODY = {
    "order_id": str(uuid.uuid4()),
    "customer_id": "cus_1",
    "amount_cents": 100,
    "currency": "USD",
}


async def test_error_rate_one_fails_charges_but_not_health(
    payment_client: Any, count_charges: Callable[..., Any]
) -> None:
    async with payment_client(fault_error_rate=1.0) as client:
        answer = await client.post("/charges", json=BODY, headers={"Idempotency-Key": "f"})
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["type"] == "/problems/injected-fault"
        assert (await client.get(f"/charges/{uuid.uuid4()}")).status_code == 503
        for path in ("/healthz", "/readyz", "/metrics", "/internal/faults"):
            assert (await client.get(path)).status_code == 200, path
    assert await count_charges() == 0


async def test_injected_latency_is_measurable(payment_client: Any) -> None:
    async with payment_client(fault_latency_ms=300) as client:
        start = time.perf_counter()
        answer = await client.get("/charges", params={"order_id": str(uuid.uuid4())})
        slow = time.perf_counter() - start
        start = time.perf_counter()
        assert (await client.get("/healthz")).status_code == 200
        fast = time.perf_counter() - start
    assert answer.status_code == 200
    assert slow >= 0.3
    assert fast < 0.3


async def test_fault_api_turns_charges_off_and_on_at_runtime(
    payment_client: Any, count_charges: Callable[..., Any]
) -> None:
    async with payment_client() as client:
        url = f"/charges?order_id={uuid.uuid4()}"
        assert (await client.get(url)).status_code == 200
        put = await client.put("/internal/faults", json={"error_rate": 1.0})
        assert put.status_code == 200
        assert (await client.get("/internal/faults")).json() == {
            "error_rate": 1.0,
            "latency_ms": 0,
            "hang": False,
        }
        refused = await client.post("/charges", json=BODY, headers={"Idempotency-Key": "k1"})
        assert refused.status_code == 503
        assert (await client.delete("/internal/faults")).status_code == 200
        created = await client.post("/charges", json=BODY, headers={"Idempotency-Key": "k1"})
        assert created.status_code == 201
    assert await count_charges() == 1


async def test_clearing_a_hang_releases_the_held_charge(
    payment_client: Any, count_charges: Callable[..., Any]
) -> None:
    async with payment_client() as client:
        await client.put("/internal/faults", json={"hang": True})
        held = asyncio.create_task(
            client.post("/charges", json=BODY, headers={"Idempotency-Key": "hang"})
        )
        done, _ = await asyncio.wait({held}, timeout=0.3)
        assert not done, "a hanging payment answered"
        await client.delete("/internal/faults")
        assert (await asyncio.wait_for(held, 10)).status_code == 201
    assert await count_charges() == 1


async def test_fault_api_refuses_bad_bodies_and_missing_credential(payment_client: Any) -> None:
    async with payment_client() as client:
        bad = await client.put("/internal/faults", json={"error_rate": 3})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
    async with payment_client(headers={}) as anonymous:
        assert (await anonymous.put("/internal/faults", json={"hang": True})).status_code == 401
        assert (await anonymous.get("/internal/faults")).status_code == 401
