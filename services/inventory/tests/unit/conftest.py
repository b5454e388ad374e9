"""A fake inventory repository (the same protocol as the SQL one, in dictionaries) and the
service over it, on the manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from inventory.models import Product, Reservation, ReservationItem, ReservationStatus
from inventory.service import InventoryRepository, InventoryService, UnitOfWork


class FakeInventoryRepository:
    """Enough behaviour to test the use cases: guarded transitions, conditional stock."""

    def __init__(self) -> None:
        self.products: dict[str, Product] = {}
        self.reservations: dict[str, Reservation] = {}
        self.transactions = 0

    def add_product(self, sku: str, stock: int, price_cents: int = 500) -> None:
        self.products[sku] = Product(
            sku=sku, name=sku, price_cents=price_cents, currency="USD", stock=stock, reserved=0
        )

    def unit_of_work(self) -> UnitOfWork:
        @asynccontextmanager
        async def open_transaction() -> AsyncIterator[InventoryRepository]:
            self.transactions += 1
            yield self

        return open_transaction

    async def list_products(self, after: str | None, limit: int) -> Sequence[Product]:
        skus = sorted(s for s in self.products if after is None or s > after)
        return [self.products[s] for s in skus[:limit]]

    async def get_product(self, sku: str) -> Product | None:
        return self.products.get(sku)

    async def get_prices(self, skus: Iterable[str]) -> dict[str, int]:
        return {s: self.products[s].price_cents for s in skus if s in self.products}

    async def reserve_stock(self, sku: str, quantity: int) -> bool:
        product = self.products[sku]
        if product.stock - product.reserved < quantity:
            return False
        product.reserved += quantity
        return True

    async def settle_stock(self, items: Iterable[tuple[str, int]], *, consume: bool) -> None:
        for sku, quantity in items:
            self.products[sku].reserved -= quantity
            if consume:
                self.products[sku].stock -= quantity

    async def claim_order(
        self, reservation_id: str, order_id: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        if any(r.order_id == order_id for r in self.reservations.values()):
            return False
        self.reservations[reservation_id] = Reservation(
            id=reservation_id,
            order_id=order_id,
            status="held",
            expires_at=expires_at,
            created_at=now,
            updated_at=now,
            items=[],
        )
        return True

    async def add_items(self, reservation_id: str, items: Sequence[tuple[str, int, int]]) -> None:
        self.reservations[reservation_id].items = [
            ReservationItem(reservation_id=reservation_id, sku=s, quantity=q, unit_price_cents=p)
            for s, q, p in items
        ]

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        return self.reservations.get(reservation_id)

    async def find_by_order(self, order_id: str) -> Reservation | None:
        return next((r for r in self.reservations.values() if r.order_id == order_id), None)

    async def transition(
        self, reservation_id: str, to: ReservationStatus, *, now: datetime, live: bool | None = None
    ) -> bool:
        reservation = self.reservations.get(reservation_id)
        if reservation is None or reservation.status != "held":
            return False
        if live is not None and (reservation.expires_at > now) != live:
            return False
        reservation.status, reservation.updated_at = to.value, now
        return True

    async def expired_ids(self, now: datetime, limit: int) -> list[str]:
        due = [r for r in self.reservations.values() if r.status == "held" and r.expires_at <= now]
        return [r.id for r in sorted(due, key=lambda r: r.expires_at)][:limit]


@pytest.fixture
def repo() -> FakeInventoryRepository:
    return FakeInventoryRepository()


@pytest.fixture
def service(repo: FakeInventoryRepository, clock: Any) -> InventoryService:
    return InventoryService(repo.unit_of_work(), clock=clock)
