"""SQL of the order service. The repository works in its caller's transaction; it never commits.

A key is claimed with INSERT ... ON CONFLICT DO NOTHING on the record's primary key: a racing
claim of the same (customer, key) waits on the index until the first transaction ends, then
does nothing, so exactly one request runs the saga.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from order.models import IN_PROGRESS, OPEN_SAGA_STATES, CustomerOrder, IdempotencyRecord, OrderItem


class SqlOrderRepository:
    """Orders and idempotency records over one session (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _rowcount(self, statement: Any) -> int:
        result = await self.session.execute(statement)
        return cast("CursorResult[Any]", result).rowcount

    # Idempotency records

    async def claim_key(self, customer_id: str, key: str, fingerprint: str, now: datetime) -> bool:
        """Insert the key's record (in progress); False when the key is already claimed."""
        dialect = self.session.get_bind().dialect.name
        module: Any = postgresql if dialect == "postgresql" else sqlite
        statement = (
            module.insert(IdempotencyRecord)
            .values(
                customer_id=customer_id,
                key=key,
                fingerprint=fingerprint,
                state=IN_PROGRESS,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["customer_id", "key"])
        )
        return await self._rowcount(statement) == 1

    async def get_record(self, customer_id: str, key: str) -> IdempotencyRecord | None:
        return await self.session.get(IdempotencyRecord, (customer_id, key))

    async def record_for_order(self, order_id: str) -> IdempotencyRecord | None:
        """The in-progress record of an order (absent once answered or given up)."""
        result = await self.session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.order_id == order_id, IdempotencyRecord.state == IN_PROGRESS
            )
        )
        return result.scalars().first()

    async def attach_order(self, customer_id: str, key: str, order_id: str, now: datetime) -> None:
        await self.session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.customer_id == customer_id,
                IdempotencyRecord.key == key,
            )
            .values(order_id=order_id, updated_at=now)
        )

    async def complete_record(self, order_id: str, status: int, body: str, now: datetime) -> None:
        await self.session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.order_id == order_id,
                IdempotencyRecord.state == IN_PROGRESS,
            )
            .values(state="completed", response_status=status, response_body=body, updated_at=now)
        )

    async def delete_record_for_order(self, order_id: str) -> None:
        # By order id, never by key: the client may already have claimed the key again.
        await self.session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.order_id == order_id, IdempotencyRecord.state == IN_PROGRESS
            )
        )

    async def delete_orphan_claim(self, customer_id: str, key: str) -> None:
        """Drop a claim that never got its order (the order insert failed)."""
        await self.session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.customer_id == customer_id,
                IdempotencyRecord.key == key,
                IdempotencyRecord.order_id.is_(None),
                IdempotencyRecord.state == IN_PROGRESS,
            )
        )

    async def delete_stale_orphan_claims(self, cutoff: datetime) -> int:
        return await self._rowcount(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.order_id.is_(None),
                IdempotencyRecord.state == IN_PROGRESS,
                IdempotencyRecord.updated_at <= cutoff,
            )
        )

    # Orders

    async def add_order(self, order: CustomerOrder) -> None:
        """Insert an order with its items (written at the next flush or commit)."""
        self.session.add(order)

    async def get_order(self, order_id: str) -> CustomerOrder | None:
        return await self.session.get(CustomerOrder, order_id)

    async def update_order(self, order_id: str, **values: Any) -> None:
        await self.session.execute(
            update(CustomerOrder).where(CustomerOrder.id == order_id).values(**values)
        )

    async def set_item_prices(self, order_id: str, prices: dict[str, int]) -> None:
        for sku, price in prices.items():
            await self.session.execute(
                update(OrderItem)
                .where(OrderItem.order_id == order_id, OrderItem.sku == sku)
                .values(unit_price_cents=price)
            )

    async def stale_sagas(self, cutoff: datetime, limit: int = 100) -> list[CustomerOrder]:
        result = await self.session.execute(
            select(CustomerOrder)
            .where(
                CustomerOrder.saga_state.in_(OPEN_SAGA_STATES), CustomerOrder.updated_at <= cutoff
            )
            .order_by(CustomerOrder.updated_at)
            .limit(limit)
        )
        return list(result.scalars().all())

    async def lease_saga(self, order_id: str, seen: datetime, now: datetime) -> bool:
        """Compare-and-set on updated_at, so two recovery passes never work one saga at once."""
        return (
            await self._rowcount(
                update(CustomerOrder)
                .where(CustomerOrder.id == order_id, CustomerOrder.updated_at == seen)
                .values(updated_at=now)
            )
            > 0
        )
