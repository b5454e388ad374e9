"""POST /charges: idempotency under concurrency, replays, key reuse and the decline rule."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx

PROBLEM = "application/problem+json"


def charge_body(amount_cents: int = 2_500, **changes: Any) -> dict[str, Any]:
    return {
        "order_id": str(uuid.uuid4()),
        "customer_id": "cus_42",
        "amount_cents": amount_cents,
        "currency": "USD",
        **changes,
    }


async def post_charge(
    client: httpx.AsyncClient, body: dict[str, Any], key: str = "key-1"
) -> httpx.Response:
    return await client.post("/charges", json=body, headers={"Idempotency-Key": key})


async def test_charge_then_identical_replay_answers_the_same_charge(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    body = charge_body()
    created = await post_charge(client, body)
    replay = await post_charge(client, body)
    assert created.status_code == 201, created.text
    assert replay.status_code == 200, replay.text
    assert replay.json() == created.json()
    charge = created.json()
    assert set(charge) == {
        "id",
        "order_id",
        "customer_id",
        "amount_cents",
        "currency",
        "status",
        "created_at",
    }
    assert charge["status"] == "succeeded"
    assert charge["amount_cents"] == 2_500
    assert await count_charges() == 1


async def test_fifty_concurrent_identical_charges_make_one_row(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    body = charge_body()
    answers = await asyncio.gather(*(post_charge(client, body, "same-key") for _ in range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 49 + [201], [a.text for a in answers if a.status_code >= 300]
    assert len({a.text for a in answers}) == 1
    assert await count_charges() == 1


async def test_same_key_with_changed_body_is_refused(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    body = charge_body()
    assert (await post_charge(client, body)).status_code == 201
    reused = await post_charge(client, {**body, "amount_cents": 2_501})
    assert reused.status_code == 422
    assert reused.headers["content-type"] == PROBLEM
    assert reused.json()["type"] == "/problems/idempotency-key-reused"
    assert await count_charges() == 1


async def test_json_key_order_does_not_change_the_fingerprint(client: httpx.AsyncClient) -> None:
    body = charge_body()
    reordered = dict(reversed(list(body.items())))
    first = await post_charge(client, body)
    again = await client.post(
        "/charges",
        content=httpx.Request("POST", "/", json=reordered).content,
        headers={"Idempotency-Key": "key-1", "Content-Type": "application/json"},
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


async def test_declined_charge_is_recorded_and_replayed_as_402(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    body = charge_body(amount_cents=100_001)
    declined = await post_charge(client, body)
    replay = await post_charge(client, body)
    for answer in (declined, replay):
        assert answer.status_code == 402, answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"] == "/problems/payment-declined"
    charge_id = declined.json()["charge"]["id"]
    assert replay.json()["charge"]["id"] == charge_id
    stored = await client.get(f"/charges/{charge_id}")
    assert stored.json()["status"] == "declined"
    assert await count_charges() == 1


async def test_threshold_follows_settings(payment_client: Any) -> None:
    async with payment_client(decline_above_cents=1_000) as client:
        assert (await post_charge(client, charge_body(1_000), "a")).status_code == 201
        assert (await post_charge(client, charge_body(1_001), "b")).status_code == 402


async def test_missing_idempotency_key_is_400(
    client: httpx.AsyncClient, count_charges: Callable[..., Any]
) -> None:
    answer = await client.post("/charges", json=charge_body())
    assert answer.status_code == 400
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["type"] == "/problems/missing-idempotency-key"
    assert await count_charges() == 0


async def test_missing_service_credential_is_401(
    payment_client: Any, count_charges: Callable[..., Any]
) -> None:
    async with payment_client(headers={}) as client:
        answer = await post_charge(client, charge_body())
        assert answer.status_code == 401
        assert answer.headers["content-type"] == PROBLEM
        assert (await client.get("/healthz")).status_code == 200
    assert await count_charges() == 0


async def test_charges_are_listed_by_order(client: httpx.AsyncClient) -> None:
    body = charge_body()
    created = (await post_charge(client, body)).json()
    await post_charge(client, charge_body(), "other-order")
    listed = await client.get("/charges", params={"order_id": body["order_id"]})
    assert listed.status_code == 200
    assert listed.json() == {"items": [created]}
    empty = await client.get("/charges", params={"order_id": str(uuid.uuid4())})
    assert empty.json() == {"items": []}


async def test_unknown_charge_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.get(f"/charges/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["type"] == "/problems/charge-not-found"
