"""SQL of the inventory service. Every stock change is one conditional UPDATE.

Correctness under concurrency lives in the WHERE clauses, not in reads: a reservation takes
stock with `stock - reserved >= :q` and a status moves only from 'held', so two requests
racing on one row can never both win, on PostgreSQL (row lock, re-check after wait) and
SQLite (one writer at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from inventory.models import Product, Reservation, ReservationItem, ReservationStatus

HELD = ReservationStatus.HELD.value


class SqlInventoryRepository:
    """The repository over one session (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _rowcount(self, statement: Any) -> int:
        result = await self.session.execute(statement)
        return cast("CursorResult[Any]", result).rowcount

    def _insert_ignoring_conflicts(
        self, model: type[Any], index: list[str], rows: list[dict[str, Any]]
    ) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING: a first statement that is a write on SQLite."""
        dialect = self.session.get_bind().dialect.name
        module: Any = postgresql if dialect == "postgresql" else sqlite
        return module.insert(model).values(rows).on_conflict_do_nothing(index_elements=index)

    # Products

    async def list_products(self, after: str | None, limit: int) -> Sequence[Product]:
        query = select(Product).order_by(Product.sku).limit(limit)
        if after is not None:
            query = query.where(Product.sku > after)
        return (await self.session.scalars(query)).all()

    async def get_product(self, sku: str) -> Product | None:
        return await self.session.get(Product, sku, populate_existing=True)

    async def get_prices(self, skus: Iterable[str]) -> dict[str, int]:
        rows = await self.session.execute(
            select(Product.sku, Product.price_cents).where(Product.sku.in_(list(skus)))
        )
        return {sku: price for sku, price in rows}

    async def add_missing_products(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert products whose sku is absent; existing rows (and their stock) are untouched."""
        if not rows:
            return 0
        return await self._rowcount(self._insert_ignoring_conflicts(Product, ["sku"], list(rows)))

    async def reserve_stock(self, sku: str, quantity: int) -> bool:
        """Take `quantity` from what is available, or change nothing and return False."""
        return (
            await self._rowcount(
                update(Product)
                .where(Product.sku == sku, Product.stock - Product.reserved >= quantity)
                .values(reserved=Product.reserved + quantity)
                .execution_options(synchronize_session=False)
            )
            == 1
        )

    async def settle_stock(self, items: Iterable[tuple[str, int]], *, consume: bool) -> None:
        """Give held units back (release) or take them for good (commit: stock drops too)."""
        for sku, quantity in sorted(items):
            values: dict[str, Any] = {"reserved": Product.reserved - quantity}
            if consume:
                values["stock"] = Product.stock - quantity
            await self.session.execute(
                update(Product)
                .where(Product.sku == sku)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    # Reservations

    async def claim_order(
        self, reservation_id: str, order_id: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        """Insert a held reservation unless `order_id` already has one (then False)."""
        row = {
            "id": reservation_id,
            "order_id": order_id,
            "status": HELD,
            "expires_at": expires_at,
            "created_at": now,
            "updated_at": now,
        }
        return (
            await self._rowcount(self._insert_ignoring_conflicts(Reservation, ["order_id"], [row]))
            == 1
        )

    async def add_items(self, reservation_id: str, items: Sequence[tuple[str, int, int]]) -> None:
        self.session.add_all(
            ReservationItem(
                reservation_id=reservation_id, sku=sku, quantity=quantity, unit_price_cents=price
            )
            for sku, quantity, price in items
        )
        await self.session.flush()

    def _reservations(self) -> Select[Reservation]:
        return (
            select(Reservation)
            .options(selectinload(Reservation.items))
            .execution_options(populate_existing=True)
        )

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        query = self._reservations().where(Reservation.id == reservation_id)
        return (await self.session.scalars(query)).one_or_none()

    async def find_by_order(self, order_id: str) -> Reservation | None:
        query = self._reservations().where(Reservation.order_id == order_id)
        return (await self.session.scalars(query)).one_or_none()

    async def transition(
        self, reservation_id: str, to: ReservationStatus, *, now: datetime, live: bool | None = None
    ) -> bool:
        """Move a held reservation to `to`; False if it is not held (or fails `live`).

        live=True requires `expires_at > now` (commit), live=False requires `expires_at <= now`
        (expiry), None ignores the expiry (release).
        """
        query = update(Reservation).where(
            Reservation.id == reservation_id, Reservation.status == HELD
        )
        if live is True:
            query = query.where(Reservation.expires_at > now)
        elif live is False:
            query = query.where(Reservation.expires_at <= now)
        query = query.values(status=to.value, updated_at=now)
        return await self._rowcount(query.execution_options(synchronize_session=False)) == 1

    async def expired_ids(self, now: datetime, limit: int) -> list[str]:
        query = (
            select(Reservation.id)
            .where(Reservation.status == HELD, Reservation.expires_at <= now)
            .order_by(Reservation.expires_at)
            .limit(limit)
        )
        return list((await self.session.scalars(query)).all())
