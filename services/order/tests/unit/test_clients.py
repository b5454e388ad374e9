"""The typed clients: contract refusals, unavailability and malformed answers."""

from __future__ import annotations

import time

import httpx
import pytest
from order.clients import InventoryClient, PaymentClient, Rejected
from servicekit import ServiceClient, UnavailableError, verify_service_token


def inventory_answering(response: httpx.Response) -> InventoryClient:
    transport = httpx.MockTransport(lambda request: response)
    return InventoryClient(ServiceClient("inventory", "http://inv", token="t", transport=transport))


async def test_out_of_stock_is_a_refusal_with_its_slug() -> None:
    client = inventory_answering(
        httpx.Response(409, json={"type": "/problems/out-of-stock", "detail": "SKU-1"})
    )
    with pytest.raises(Rejected) as caught:
        await client.commit("r1")
    assert (caught.value.status, caught.value.slug, caught.value.detail) == (
        409,
        "out-of-stock",
        "SKU-1",
    )


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"id": "r1"}),
        httpx.Response(200, content=b"<html>"),
        httpx.Response(
            200,
            json={
                "id": "../admin",
                "order_id": "o",
                "status": "held",
                "items": [],
                "currency": "USD",
                "total_cents": 0,
            },
        ),
        httpx.Response(500, json={}),
        httpx.Response(503, json={}),
        httpx.Response(429, json={}),
    ],
    ids=["missing-fields", "not-json", "unsafe-id", "500", "503", "429"],
)
async def test_malformed_or_failed_answers_are_unavailable(response: httpx.Response) -> None:
    with pytest.raises(UnavailableError):
        await inventory_answering(response).commit("r1")


async def test_transport_errors_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = PaymentClient(
        ServiceClient("payment", "http://pay", token="t", transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(UnavailableError):
        await client.charges_for("o1")


async def test_charge_sends_the_order_id_as_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201,
            json={
                "id": "c1",
                "order_id": "o1",
                "customer_id": "c",
                "amount_cents": 100,
                "currency": "USD",
                "status": "succeeded",
                "created_at": "x",
            },
        )

    client = PaymentClient(
        ServiceClient("payment", "http://pay", token="tok", transport=httpx.MockTransport(answer))
    )
    charge = await client.charge("o1", "c", 100, "USD")
    assert charge.id == "c1"
    assert seen[0].headers["idempotency-key"] == "o1"
    token = seen[0].headers["x-service-token"]
    assert verify_service_token(token, ["tok"], audience="payment", now=time.time())
