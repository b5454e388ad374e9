"""A malformed `Idempotency-Key` gets the same 400 problem on every hop that takes one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from payment.config import PaymentSettings
from payment.main import create_app as create_payment
from servicekit.data.migrations import upgrade
from servicekit.testing import lifespan_client

from .conftest import SECRET, service_headers

ORDER_BODY = {"items": [{"sku": "mug", "quantity": 1}]}
CHARGE_BODY = {
    "order_id": "0b9a3a4e-1c7f-4a47-9d38-3c4f1d2e5a6b",
    "customer_id": "customer-alice",
    "amount_cents": 100,
    "currency": "USD",
}
MALFORMED = ["", "x" * 256, "tab\there", "del\x7f"]


@pytest.fixture
def payment_app(tmp_path: Path) -> FastAPI:
    url = f"sqlite:///{tmp_path / 'payment.db'}"
    upgrade(url, "payment")
    settings = PaymentSettings(
        database_url=url, environment="test", service_token=SECRET, _env_file=None
    )
    return create_payment(settings)


def problem(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, body["type"], body["title"]


async def answers(
    client: httpx.AsyncClient, path: str, body: object, key: str | None, **headers: str
) -> tuple[int, str, str]:
    sent = dict(headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    return problem(await client.post(path, json=body, headers=sent))


@pytest.mark.parametrize("key", [*MALFORMED, None], ids=["empty", "long", "tab", "control", "none"])
async def test_the_same_400_at_the_gateway_order_and_payment(
    key: str | None,
    gateway: httpx.AsyncClient,
    order_app: FastAPI,
    payment_app: FastAPI,
) -> None:
    at_gateway = await answers(
        gateway, "/api/orders", ORDER_BODY, key, Authorization="Bearer alice-key"
    )
    async with lifespan_client(
        order_app, headers=service_headers("order", "customer-alice")
    ) as order:
        at_order = await answers(order, "/orders", ORDER_BODY, key)
    async with lifespan_client(
        payment_app, headers=service_headers("payment", "customer-alice")
    ) as payment:
        at_payment = await answers(payment, "/charges", CHARGE_BODY, key)
    assert at_gateway == at_order == at_payment
    slug = "missing-idempotency-key" if key is None else "invalid-idempotency-key"
    assert at_gateway[:2] == (400, f"/problems/{slug}")
