"""Injected faults hit /charges* only; health and metrics stay untouched."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from payment.faults import Faults

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
        for path in ("/healthz", "/readyz", "/metrics"):
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


async def test_faults_in_state_can_be_retuned_at_runtime(payment_client: Any) -> None:
    faults = Faults()
    async with payment_client(faults=faults) as client:
        url = f"/charges?order_id={uuid.uuid4()}"
        assert (await client.get(url)).status_code == 200
        # The app holds this one Faults object: turning a knob acts on the next call.
        faults.error_rate = 1.0
        assert (await client.get(url)).status_code == 503
        faults.error_rate = 0.0
        assert (await client.get(url)).status_code == 200
