"""POST /charges/{id}/refund: idempotent, once under concurrency, never for a declined charge."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx


async def _charge(client: httpx.AsyncClient, amount_cents: int = 700) -> dict[str, Any]:
    body = {
        "order_id": str(uuid.uuid4()),
        "customer_id": "cus_1",
        "amount_cents": amount_cents,
        "currency": "USD",
    }
    answer = await client.post("/charges", json=body, headers={"Idempotency-Key": "r-1"})
    data: dict[str, Any] = answer.json()
    return data.get("charge", data)


async def test_refund_is_idempotent(client: httpx.AsyncClient) -> None:
    charge = await _charge(client)
    first = await client.post(f"/charges/{charge['id']}/refund")
    again = await client.post(f"/charges/{charge['id']}/refund")
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json() == again.json() == {**charge, "status": "refunded"}


async def test_concurrent_refunds_refund_once(client: httpx.AsyncClient, database_url: str) -> None:
    charge = await _charge(client)
    answers = await asyncio.gather(
        *(client.post(f"/charges/{charge['id']}/refund") for _ in range(20))
    )
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["status"] for a in answers} == {"refunded"}
    stored = await client.get(f"/charges/{charge['id']}")
    assert stored.json()["status"] == "refunded"


async def test_declined_charge_is_not_refundable(client: httpx.AsyncClient) -> None:
    charge = await _charge(client, amount_cents=200_000)
    answer = await client.post(f"/charges/{charge['id']}/refund")
    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/not-refundable"
    assert (await client.get(f"/charges/{charge['id']}")).json()["status"] == "declined"


async def test_refund_of_unknown_charge_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.post(f"/charges/{uuid.uuid4()}/refund")
    assert answer.status_code == 404
