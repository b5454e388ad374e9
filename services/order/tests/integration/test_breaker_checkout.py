"""Checkout while payment's breaker is open, on the real PostgreSQL.

The breaker is configured the way an operator would, through `ORDER_BREAKER_*` variables.
Open: checkout answers 503 with Retry-After without calling payment or holding stock (order
checks payment's breaker before it reserves), and the saga releases what the failed checkout
had reserved. After the reset time a probe succeeds and the breaker closes by itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.postgres

BODY = {"items": [{"sku": "SKU-1", "quantity": 2}]}
RESET_SECONDS = 0.5


@pytest.fixture(autouse=True)
def breaker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse: set before the `client` fixture reads OrderSettings from the environment.
    monkeypatch.setenv("ORDER_BREAKER_CONSECUTIVE_FAILURES", "2")
    monkeypatch.setenv("ORDER_BREAKER_RESET_SECONDS", str(RESET_SECONDS))
    monkeypatch.setenv("ORDER_BREAKER_HALF_OPEN_PROBES", "1")


async def post(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/orders", json=BODY, headers={"Idempotency-Key": key})


async def payment_breaker_state(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('servicekit_breaker_state{dependency="payment"}')
    )
    return float(line.rsplit(" ", 1)[1])


async def test_open_payment_breaker_fails_checkout_fast_and_releases_the_stock(
    client: httpx.AsyncClient, inventory: Any, payment: Any, orders: Any, count: Any
) -> None:
    assert await payment_breaker_state(client) == 0  # the series exists before any call

    payment.down = True
    first = await post(client, "k-1")  # the charge and the charge lookup fail: 2 in a row
    assert first.status_code == 503
    assert await payment_breaker_state(client) == 2  # open

    calls_before = len(payment.calls)
    second = await post(client, "k-2")
    assert second.status_code == 503
    assert second.headers["content-type"] == "application/problem+json"
    assert int(second.headers["retry-after"]) >= 1
    assert len(payment.calls) == calls_before  # failed fast: payment was not called
    assert inventory.statuses() == ["released"]  # ... and no stock was held for it
    assert inventory.available["SKU-1"] == 100

    # Payment is back; after the reset time one probe (the next charge) closes the breaker.
    payment.down = False
    await asyncio.sleep(RESET_SECONDS + 0.1)
    third = await post(client, "k-3")
    assert third.status_code == 201, third.text
    assert await payment_breaker_state(client) == 0
    assert payment.statuses() == ["succeeded"]

    # Recovery finishes the compensation it postponed while payment could not be asked.
    await orders.recover_sagas(stale_seconds=0)
    assert inventory.statuses() == ["released", "committed"]
    assert payment.statuses() == ["succeeded"]  # never charged a failed order
    assert await count("customer_order") == 3
