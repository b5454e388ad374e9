"""The saga's writes: one transaction per downstream call, and the state guarding each call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from order.models import CustomerOrder
from order.repository import SqlOrderRepository
from order.schemas import OrderCreate, OrderItemCreate
from order.service import OrderService
from servicekit import Database
from sqlalchemy import select


async def saga_state(database: Database) -> str:
    async with database.transaction() as session:
        return str((await session.execute(select(CustomerOrder.saga_state))).scalar_one())


async def test_a_confirmed_checkout_runs_five_transactions_each_guarding_its_call(
    database: Database, orders: OrderService, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = 0
    plain = database.unit_of_work(SqlOrderRepository)

    @asynccontextmanager
    async def counted() -> AsyncIterator[SqlOrderRepository]:
        nonlocal opened
        opened += 1
        async with plain() as repository:
            yield repository

    monkeypatch.setattr(orders, "unit_of_work", counted)
    monkeypatch.setattr(orders.checkout, "unit_of_work", counted)
    # The state recovery would find if the process died as each call goes out.
    seen: list[tuple[str, str]] = []
    for client, call in (
        (orders.checkout.inventory, "reserve"),
        (orders.checkout.payment, "charge"),
        (orders.checkout.inventory, "commit"),
    ):

        async def spy(*args: Any, _sent: Any = getattr(client, call), _call: str = call) -> Any:
            seen.append((_call, await saga_state(database)))
            return await _sent(*args)

        monkeypatch.setattr(client, call, spy)

    body = OrderCreate(items=[OrderItemCreate(sku="SKU-1", quantity=2)])
    answer = await orders.place_order("cust-1", "key-1", body)

    assert answer.status == 201
    assert seen == [("reserve", "reserving"), ("charge", "charging"), ("commit", "charged")]
    # claim, order, reservation's facts with `charging`, `charged`, confirmation
    assert opened == 5
    stored = json.loads(answer.body)
    read = await orders.read_order("cust-1", stored["id"])
    assert stored == json.loads(read.model_dump_json())
    assert stored["status"] == "confirmed"
    assert stored["items"] == [{"sku": "SKU-1", "quantity": 2, "unit_price_cents": 1250}]
