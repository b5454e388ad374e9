"""Charge use cases over a fake repository (the SQL guarantees are tested in integration)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from payment.exceptions import ChargeNotFoundError, IdempotencyKeyReusedError, NotRefundableError
from payment.models import Charge
from payment.schemas import ChargeCreate
from payment.service import ChargeRepository, ChargeService, UnitOfWork

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class FakeChargeRepository:
    """In-memory charges keyed like the table's unique constraint."""

    def __init__(self) -> None:
        self.rows: dict[str, Charge] = {}

    def unit_of_work(self) -> UnitOfWork:
        @asynccontextmanager
        async def open_transaction() -> AsyncIterator[ChargeRepository]:
            yield self

        return open_transaction

    async def insert_if_absent(self, values: dict[str, Any]) -> bool:
        if await self.get_by_key(values["customer_id"], values["idempotency_key"]):
            return False
        self.rows[values["id"]] = Charge(**values)
        return True

    async def get(self, charge_id: str) -> Charge | None:
        return self.rows.get(charge_id)

    async def get_by_key(self, customer_id: str, idempotency_key: str) -> Charge | None:
        for row in self.rows.values():
            if (row.customer_id, row.idempotency_key) == (customer_id, idempotency_key):
                return row
        return None

    async def list_by_order(self, order_id: str) -> list[Charge]:
        return [r for r in self.rows.values() if r.order_id == order_id]

    async def mark_refunded(self, charge_id: str, refunded_at: datetime) -> bool:
        row = self.rows.get(charge_id)
        if row is None or row.status != "succeeded":
            return False
        row.status, row.refunded_at = "refunded", refunded_at
        return True


def _body(amount_cents: int = 1_000, customer_id: str = "cus_1") -> ChargeCreate:
    return ChargeCreate(
        order_id=uuid.uuid4(), customer_id=customer_id, amount_cents=amount_cents, currency="USD"
    )


@pytest.fixture
def store() -> FakeChargeRepository:
    return FakeChargeRepository()


@pytest.fixture
def service(store: FakeChargeRepository) -> ChargeService:
    return ChargeService(store.unit_of_work(), decline_above_cents=100_000, clock=lambda: NOW)


async def test_replay_answers_the_recorded_charge(
    service: ChargeService, store: FakeChargeRepository
) -> None:
    body = _body()
    first = await service.create_charge(body, "k1")
    again = await service.create_charge(body, "k1")
    assert (first.created, again.created) == (True, False)
    assert again.charge.id == first.charge.id
    assert len(store.rows) == 1


async def test_same_key_with_another_body_is_refused(service: ChargeService) -> None:
    body = _body()
    await service.create_charge(body, "k1")
    with pytest.raises(IdempotencyKeyReusedError):
        await service.create_charge(body.model_copy(update={"amount_cents": 2}), "k1")


async def test_same_key_for_another_customer_is_another_charge(service: ChargeService) -> None:
    first = await service.create_charge(_body(customer_id="a"), "k1")
    second = await service.create_charge(_body(customer_id="b"), "k1")
    assert first.charge.id != second.charge.id


async def test_charge_above_threshold_is_recorded_declined(service: ChargeService) -> None:
    outcome = await service.create_charge(_body(amount_cents=100_001), "k1")
    assert outcome.declined
    assert outcome.charge.status == "declined"


async def test_refund_is_idempotent(service: ChargeService) -> None:
    outcome = await service.create_charge(_body(), "k1")
    first = await service.refund_charge(outcome.charge.id)
    again = await service.refund_charge(outcome.charge.id)
    assert first.status == again.status == "refunded"
    assert again.refunded_at == NOW


async def test_declined_charge_is_not_refundable(service: ChargeService) -> None:
    outcome = await service.create_charge(_body(amount_cents=500_000), "k1")
    with pytest.raises(NotRefundableError):
        await service.refund_charge(outcome.charge.id)


async def test_unknown_charge_is_not_found(service: ChargeService) -> None:
    with pytest.raises(ChargeNotFoundError):
        await service.refund_charge(str(uuid.uuid4()))
