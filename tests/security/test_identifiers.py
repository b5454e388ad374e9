"""Identifiers (order id, sku, cursor, idempotency key, customer id, request id) are checked for
format and length before they reach a database or an upstream URL: hostile values get a 4xx
problem, never a 5xx."""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from servicekit.testing import lifespan_client

from .conftest import FakeDownstreams, Upstreams, service_headers

HOSTILE = [
    "' OR '1'='1",
    "1; DROP TABLE customer_order; --",
    "..",
    "%2e%2e%2f",
    "a" * 10_000,
    "ключ",
    "\u202emirrored",
    "${jndi:ldap://evil.example/a}",
    "<script>alert(1)</script>",
]
ALICE = {"Authorization": "Bearer alice-key"}


@pytest.mark.parametrize("value", HOSTILE)
async def test_gateway_refuses_hostile_path_and_query_identifiers(
    gateway: httpx.AsyncClient, upstreams: Upstreams, value: str
) -> None:
    segment = quote(value, safe="")
    answers = [
        await gateway.get(f"/api/products/{segment}", headers=ALICE),
        await gateway.get(f"/api/orders/{segment}", headers=ALICE),
        await gateway.get("/api/products", params={"cursor": value}, headers=ALICE),
    ]
    for answer in answers:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.status_code)
        assert answer.headers["content-type"] == "application/problem+json"
    assert upstreams.requests == []


@pytest.mark.parametrize("value", HOSTILE)
async def test_order_service_refuses_hostile_ids_keys_and_customers(
    order_app: FastAPI, downstreams: FakeDownstreams, value: str
) -> None:
    raw = value.encode()
    body = {"items": [{"sku": "mug", "quantity": 1}]}
    async with lifespan_client(order_app) as client:
        read = await client.get(
            f"/orders/{quote(value, safe='')}", headers=service_headers("order", "customer-a")
        )
        keyed = await client.post(
            "/orders",
            json=body,
            headers=[
                *((k.encode(), v.encode()) for k, v in service_headers("order", "c").items()),
                (b"Idempotency-Key", raw),
            ],
        )
        token = service_headers("order", "x")["X-Service-Token"]
        customer = await client.post(
            "/orders",
            json=body,
            headers=[
                (b"X-Service-Token", token.encode()),
                (b"X-Customer-ID", raw),
                (b"Idempotency-Key", b"k-1"),
            ],
        )
    assert read.status_code == 404
    # Printable-ASCII keys up to 255 characters are the client's choice; anything else is 400.
    assert keyed.status_code in (201, 400) and (keyed.status_code == 400) == (
        len(value) > 255 or not value.isascii() or not value.isprintable()
    )
    # A customer id outside the format is dropped by the credential check: no customer, 401.
    well_formed = re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value) is not None
    assert customer.status_code == (201 if well_formed else 401)
