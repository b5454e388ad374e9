"""Saga confirmation and compensation calls are sent critical; the rest are not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from order.clients import InventoryClient, PaymentClient
from order.schemas import OrderItemCreate
from servicekit import ServiceClient, contract

PRIORITY_HEADER = contract.PRIORITY.name

RESERVATION = {
    "id": "r1",
    "order_id": "o1",
    "status": "held",
    "items": [{"sku": "mug", "quantity": 1, "unit_price_cents": 100}],
    "currency": "USD",
    "total_cents": 100,
    "expires_at": "2030-01-01T00:00:00Z",
    "created_at": "2030-01-01T00:00:00Z",
}
CHARGE = {
    "id": "c1",
    "order_id": "o1",
    "customer_id": "cu1",
    "amount_cents": 100,
    "currency": "USD",
    "status": "succeeded",
    "created_at": "2030-01-01T00:00:00Z",
}


def recording(body: dict[str, Any], seen: list[str | None]) -> ServiceClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(PRIORITY_HEADER))
        return httpx.Response(200, json=body)

    return ServiceClient("downstream", "http://d", token="t", transport=httpx.MockTransport(answer))


Call = Callable[[InventoryClient, PaymentClient], Awaitable[object]]


@pytest.mark.parametrize(
    ("call", "priority"),
    [
        (lambda inv, pay: inv.commit("r1"), "critical"),
        (lambda inv, pay: inv.release("r1"), "critical"),
        (lambda inv, pay: pay.refund("c1"), "critical"),
        (lambda inv, pay: inv.reserve("o1", [OrderItemCreate(sku="mug", quantity=1)], 60), None),
        (lambda inv, pay: pay.charge("o1", "cu1", 100, "USD"), None),
    ],
)
async def test_only_confirmation_and_compensation_are_critical(
    call: Call, priority: str | None
) -> None:
    seen: list[str | None] = []
    inventory = InventoryClient(recording(RESERVATION, seen))
    payment = PaymentClient(recording(CHARGE, seen))
    await call(inventory, payment)
    assert seen == [priority]
