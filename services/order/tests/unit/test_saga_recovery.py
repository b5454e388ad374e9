"""The recovery pass, per saga state, against the fakes on SQLite."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from order.models import CustomerOrder, IdempotencyRecord, OrderItem
from order.service import OrderService
from servicekit import Database

CUSTOMER = "cust-1"


async def seed(
    database: Database,
    saga_state: str,
    *,
    reservation_id: str | None = None,
    charge_id: str | None = None,
    order_id: str | None = None,
    total: int = 2500,
) -> str:
    """An order its request left in `saga_state`, with its key still in flight."""
    order_id = order_id or str(uuid.uuid4())
    now = datetime.now(UTC)
    async with database.transaction() as session:
        session.add(
            CustomerOrder(
                id=order_id,
                customer_id=CUSTOMER,
                status="pending",
                saga_state=saga_state,
                total_cents=total,
                currency="USD",
                reservation_id=reservation_id,
                charge_id=charge_id,
                created_at=now,
                updated_at=now,
                items=[OrderItem(sku="SKU-1", quantity=2, position=0, unit_price_cents=1250)],
            )
        )
        session.add(
            IdempotencyRecord(
                customer_id=CUSTOMER,
                key=f"key-{order_id}",
                fingerprint="f" * 64,
                state="in_progress",
                order_id=order_id,
                created_at=now,
                updated_at=now,
            )
        )
    return order_id


def hold(inventory: Any, order_id: str) -> str:
    response = inventory._reserve(
        {"order_id": order_id, "items": [{"sku": "SKU-1", "quantity": 2}]}
    )
    return str(response.json()["id"])


def charge(payment: Any, order_id: str, amount: int = 2500) -> str:
    request = httpx.Request(
        "POST",
        "http://payment/charges",
        headers={"Idempotency-Key": order_id},
        json={
            "order_id": order_id,
            "customer_id": CUSTOMER,
            "amount_cents": amount,
            "currency": "USD",
        },
    )
    return str(payment._charge(request).json()["id"])


async def state_of(database: Database, order_id: str) -> tuple[str, str, IdempotencyRecord | None]:
    async with database.transaction() as session:
        order = await session.get(CustomerOrder, order_id)
        assert order is not None
        record = await session.get(IdempotencyRecord, (CUSTOMER, f"key-{order_id}"))
        return order.status, order.saga_state, record


async def test_fails_pending_saga_and_frees_its_key(
    database: Database, orders: OrderService
) -> None:
    order_id = await seed(database, "pending")
    assert await orders.recover_sagas(stale_seconds=0) == 1
    assert await state_of(database, order_id) == ("failed", "failed", None)


async def test_releases_a_hold_whose_answer_was_lost(
    database: Database, orders: OrderService, inventory: Any
) -> None:
    order_id = await seed(database, "reserving")
    hold(inventory, order_id)
    await orders.recover_sagas(stale_seconds=0)
    assert inventory.statuses() == ["released"]
    assert await state_of(database, order_id) == ("failed", "failed", None)


async def test_compensates_a_reserved_saga(
    database: Database, orders: OrderService, inventory: Any
) -> None:
    order_id = str(uuid.uuid4())
    await seed(database, "reserved", order_id=order_id, reservation_id=hold(inventory, order_id))
    await orders.recover_sagas(stale_seconds=0)
    assert inventory.statuses() == ["released"]
    assert inventory.available["SKU-1"] == 100
    assert (await state_of(database, order_id))[:2] == ("failed", "failed")


async def test_continues_a_charging_saga_whose_charge_succeeded(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    await seed(database, "charging", order_id=order_id, reservation_id=hold(inventory, order_id))
    charge(payment, order_id)
    await orders.recover_sagas(stale_seconds=0)
    status, saga_state, record = await state_of(database, order_id)
    assert (status, saga_state) == ("confirmed", "confirmed")
    assert record is not None and record.state == "completed" and record.response_status == 201
    assert json.loads(record.response_body or "")["status"] == "confirmed"
    assert inventory.statuses() == ["committed"]


async def test_fails_a_charging_saga_without_charge(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    await seed(database, "charging", order_id=order_id, reservation_id=hold(inventory, order_id))
    await orders.recover_sagas(stale_seconds=0)
    assert await state_of(database, order_id) == ("failed", "failed", None)
    assert inventory.statuses() == ["released"]
    assert payment.charges == {}


async def test_confirms_a_charged_saga_and_stores_its_answer(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    await seed(
        database,
        "charged",
        order_id=order_id,
        reservation_id=hold(inventory, order_id),
        charge_id=charge(payment, order_id),
    )
    await orders.recover_sagas(stale_seconds=0)
    status, _, record = await state_of(database, order_id)
    assert status == "confirmed"
    assert record is not None and record.response_status == 201
    assert payment.statuses() == ["succeeded"]


async def test_refunds_a_charged_saga_whose_hold_expired(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    reservation_id = hold(inventory, order_id)
    await seed(
        database,
        "charged",
        order_id=order_id,
        reservation_id=reservation_id,
        charge_id=charge(payment, order_id),
    )
    inventory.expire(reservation_id)
    await orders.recover_sagas(stale_seconds=0)
    assert await state_of(database, order_id) == ("failed", "failed", None)
    assert payment.statuses() == ["refunded"]


async def test_finishes_a_compensation_left_halfway(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    await seed(
        database, "compensating", order_id=order_id, reservation_id=hold(inventory, order_id)
    )
    charge(payment, order_id)
    await orders.recover_sagas(stale_seconds=0)
    assert (await state_of(database, order_id))[1] == "failed"
    assert inventory.statuses() == ["released"]
    assert payment.statuses() == ["refunded"]


async def test_leaves_fresh_sagas_alone(
    database: Database, orders: OrderService, inventory: Any
) -> None:
    order_id = await seed(database, "reserved")
    assert await orders.recover_sagas(stale_seconds=3600) == 0
    assert (await state_of(database, order_id))[1] == "reserved"


async def test_one_failing_saga_does_not_stop_the_others(
    database: Database, orders: OrderService, inventory: Any
) -> None:
    broken = await seed(database, "pending")
    healthy = await seed(database, "pending")
    inventory.broken_orders.add(broken)
    await orders.recover_sagas(stale_seconds=0)
    assert (await state_of(database, healthy))[1] == "failed"
    assert (await state_of(database, broken))[1] == "compensating"


async def test_keeps_a_charged_saga_while_inventory_is_down(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    await seed(
        database,
        "charged",
        order_id=order_id,
        reservation_id=hold(inventory, order_id),
        charge_id=charge(payment, order_id),
    )
    inventory.down = True
    await orders.recover_sagas(stale_seconds=0)
    status, saga_state, record = await state_of(database, order_id)
    assert (status, saga_state) == ("pending", "charged")
    assert record is not None and record.state == "in_progress"
