"""Bad input is answered 4xx problem+json, never 500, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

GOOD = {
    "order_id": "5b0d1c7e-7f1a-4c55-9a51-3c8f0e0a9d11",
    "customer_id": "cus_1",
    "amount_cents": 100,
    "currency": "USD",
}

BAD_BODIES: list[tuple[str, Any]] = [
    ("zero amount", {**GOOD, "amount_cents": 0}),
    ("negative amount", {**GOOD, "amount_cents": -5}),
    ("amount over the cap", {**GOOD, "amount_cents": 10_000_001}),
    ("amount as a string", {**GOOD, "amount_cents": "100"}),
    ("amount as a float", {**GOOD, "amount_cents": 100.5}),
    ("another currency", {**GOOD, "currency": "EUR"}),
    ("lowercase currency", {**GOOD, "currency": "usd"}),
    ("garbage order id", {**GOOD, "order_id": "not-a-uuid"}),
    ("customer with spaces", {**GOOD, "customer_id": "bad customer"}),
    ("customer too long", {**GOOD, "customer_id": "c" * 65}),
    ("unknown field", {**GOOD, "coupon": "FREE"}),
    ("missing field", {k: v for k, v in GOOD.items() if k != "currency"}),
    ("not an object", [GOOD]),
]


async def test_bad_charge_bodies_are_422_and_write_nothing(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    for name, body in BAD_BODIES:
        answer = await client.post("/charges", json=body, headers={"Idempotency-Key": name})
        assert answer.status_code == 422, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", name
    assert await count_charges() == 0


async def test_bad_idempotency_keys_are_4xx(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    for key in (b"k" * 256, b"", "caf\u00e9".encode(), b"tab\there"):
        answer = await client.post("/charges", json=GOOD, headers={"Idempotency-Key": key})
        assert answer.status_code in (400, 422), (key, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    assert await count_charges() == 0


async def test_malformed_json_is_400(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    answer = await client.post(
        "/charges",
        content=b'{"order_id": ',
        headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert await count_charges() == 0


async def test_garbage_ids_are_422_not_500(client: httpx.AsyncClient) -> None:
    for method, url in [
        ("GET", "/charges/not-a-uuid"),
        ("POST", "/charges/1/refund"),
        ("GET", "/charges/%00"),
        ("GET", "/charges?order_id=nope"),
        ("GET", "/charges"),
    ]:
        answer = await client.request(method, url)
        assert answer.status_code == 422, (method, url, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


async def test_uppercase_uuid_finds_the_same_charge(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/charges",
        json={**GOOD, "order_id": str(uuid.uuid4())},
        headers={"Idempotency-Key": "upper"},
    )
    charge_id = created.json()["id"]
    answer = await client.get(f"/charges/{charge_id.upper()}")
    assert answer.status_code == 200
    assert answer.json()["id"] == charge_id
