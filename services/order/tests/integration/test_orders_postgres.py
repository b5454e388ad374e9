"""POST/GET /orders on the real PostgreSQL, with contract fakes of inventory and payment."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from order.models import CustomerOrder, IdempotencyRecord, OrderItem
from order.schemas import OrderCreate

pytestmark = pytest.mark.postgres

CUSTOMER = "cust-1"
BODY = {"items": [{"sku": "SKU-1", "quantity": 2}]}


@pytest.fixture(autouse=True)
def no_read_only_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # 50 concurrent requests on the test's small pool really do saturate it, and on a busy
    # machine the data tier rightly goes read-only; these tests are about idempotency, so the
    # data tier is off here (it has its own tests: servicekit test_readonly*).
    monkeypatch.setenv("ORDER_READ_ONLY_ENABLED", "false")


@pytest.fixture(autouse=True)
def slow_downstreams(inventory: Any, payment: Any) -> None:
    # A little latency, as over a network, so concurrent requests really overlap.
    inventory.delay = payment.delay = 0.01


async def post(client: httpx.AsyncClient, body: Any = BODY, key: str = "k-1") -> httpx.Response:
    return await client.post("/orders", json=body, headers={"Idempotency-Key": key})


async def test_confirms_an_order(client: httpx.AsyncClient, inventory: Any, count: Any) -> None:
    response = await post(client)
    assert response.status_code == 201
    order = response.json()
    assert order["status"] == "confirmed"
    assert order["total_cents"] == 2500
    assert inventory.statuses() == ["committed"]
    assert await count("customer_order") == 1
    read = await client.get(f"/orders/{order['id']}")
    assert read.json() == order


async def test_replays_identical_bytes(client: httpx.AsyncClient, payment: Any) -> None:
    first = await post(client)
    again = await post(client)
    assert again.status_code == 201
    assert again.content == first.content
    assert len(payment.charges) == 1


async def test_changed_body_with_same_key_is_422(client: httpx.AsyncClient) -> None:
    await post(client)
    response = await post(client, {"items": [{"sku": "SKU-2", "quantity": 1}]})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"


async def test_missing_key_is_400(client: httpx.AsyncClient, count: Any) -> None:
    response = await client.post("/orders", json=BODY)
    assert response.status_code == 400
    assert await count("idempotency_record") == 0


async def test_fifty_concurrent_posts_with_one_key_make_one_order(
    client: httpx.AsyncClient, payment: Any, count: Any
) -> None:
    responses = await asyncio.gather(*(post(client) for _ in range(50)))
    created = [r for r in responses if r.status_code == 201]
    others = [r for r in responses if r.status_code != 201]
    assert created, [r.status_code for r in responses]
    assert {r.content for r in created} == {created[0].content}
    for response in others:
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/request-in-flight"
        assert response.headers["retry-after"] == "1"
    assert await count("customer_order") == 1
    assert len(payment.charges) == 1
    replay = await post(client)
    assert (replay.status_code, replay.content) == (201, created[0].content)


async def test_declined_payment_releases_stock(
    client: httpx.AsyncClient, inventory: Any, payment: Any
) -> None:
    response = await post(client, {"items": [{"sku": "PRICEY", "quantity": 1}]})
    assert response.status_code == 402
    assert inventory.statuses() == ["released"]
    assert "succeeded" not in payment.statuses()


async def test_out_of_stock_is_409(client: httpx.AsyncClient) -> None:
    response = await post(client, {"items": [{"sku": "SKU-2", "quantity": 6}]})
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/out-of-stock"


async def test_payment_outage_is_503_then_retry_succeeds(
    client: httpx.AsyncClient, inventory: Any, payment: Any
) -> None:
    payment.down = True
    response = await post(client)
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert inventory.statuses() == ["released"]
    payment.down = False
    retried = await post(client)
    assert retried.status_code == 201
    assert retried.json()["status"] == "confirmed"
    assert payment.statuses() == ["succeeded"]


async def test_other_customers_get_404(client: httpx.AsyncClient) -> None:
    order_id = (await post(client)).json()["id"]
    response = await client.get(f"/orders/{order_id}", headers={"X-Customer-ID": "intruder"})
    assert response.status_code == 404
    assert (await client.get("/orders/not-a-uuid")).status_code == 404


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", 422),
        (b'{"items": [{"sku": "SKU-1", "quantity": -1}]}', 422),
        (b'{"items": [{"sku": "SKU-1", "quantity": 1, "colour": "red"}]}', 422),
        (b'{"items": [{"sku": "SKU-1", "quantity": 1}]', 400),
        (b'{"items": [], "pad": "' + b"x" * 70_000 + b'"}', 413),
    ],
    ids=["empty", "negative-quantity", "unknown-field", "malformed-json", "oversized"],
)
async def test_bad_input_is_a_problem_and_writes_no_order(
    client: httpx.AsyncClient, count: Any, content: bytes, expected: int
) -> None:
    response = await client.post(
        "/orders",
        content=content,
        headers={"Idempotency-Key": "bad", "Content-Type": "application/json"},
    )
    assert response.status_code == expected
    assert response.headers["content-type"] == "application/problem+json"
    assert await count("customer_order") == 0
    assert await count("order_item") == 0


async def test_recovery_confirms_charged_saga(
    client: httpx.AsyncClient, orders: Any, inventory: Any
) -> None:
    inventory.commit_down = True
    assert (await post(client)).status_code == 503
    assert (await post(client)).status_code == 409
    inventory.commit_down = False
    assert await orders.recover_sagas(stale_seconds=0) == 1
    assert inventory.statuses() == ["committed"]
    replay = await post(client)
    assert replay.status_code == 201
    assert replay.json()["status"] == "confirmed"
    read = await client.get(f"/orders/{replay.json()['id']}")
    assert read.json() == replay.json()


async def test_recovery_compensates_reserved_saga(
    client: httpx.AsyncClient,
    orders: Any,
    database: Any,
    inventory: Any,
    payment: Any,
    count: Any,
) -> None:
    # A request that died right after persisting "reserved": order, hold and key in flight.
    order_id = str(uuid.uuid4())
    held = inventory._reserve({"order_id": order_id, "items": BODY["items"]}).json()
    now = datetime.now(UTC)
    async with database.transaction() as session:
        session.add(
            CustomerOrder(
                id=order_id,
                customer_id=CUSTOMER,
                status="pending",
                saga_state="reserved",
                total_cents=2500,
                currency="USD",
                reservation_id=held["id"],
                created_at=now,
                updated_at=now,
                items=[OrderItem(sku="SKU-1", quantity=2, position=0, unit_price_cents=1250)],
            )
        )
        session.add(
            IdempotencyRecord(
                customer_id=CUSTOMER,
                key="k-1",
                fingerprint=OrderCreate.model_validate(BODY).fingerprint(),
                state="in_progress",
                order_id=order_id,
                created_at=now,
                updated_at=now,
            )
        )
    assert (await post(client)).status_code == 409
    assert await orders.recover_sagas(stale_seconds=0) == 1
    assert inventory.statuses() == ["released"]
    assert await count("idempotency_record") == 0
    read = await client.get(f"/orders/{order_id}")
    assert read.json()["status"] == "failed"
    assert payment.charges == {}
    assert (await post(client)).status_code == 201
