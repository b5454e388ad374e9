"""SQL of the order service. Functions take the caller's session; they never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from order.models import IN_PROGRESS, OPEN_SAGA_STATES, CustomerOrder, IdempotencyRecord, OrderItem


async def insert_record(
    session: AsyncSession, customer_id: str, key: str, fingerprint: str, now: datetime
) -> None:
    """Claim a key; raises IntegrityError when the key is already claimed."""
    session.add(
        IdempotencyRecord(
            customer_id=customer_id,
            key=key,
            fingerprint=fingerprint,
            state=IN_PROGRESS,
            created_at=now,
            updated_at=now,
        )
    )
    await session.flush()


async def get_record(session: AsyncSession, customer_id: str, key: str) -> IdempotencyRecord | None:
    return await session.get(IdempotencyRecord, (customer_id, key))


async def record_for_order(session: AsyncSession, order_id: str) -> IdempotencyRecord | None:
    """The in-progress record of an order (absent once answered or given up)."""
    result = await session.execute(
        select(IdempotencyRecord).where(
            IdempotencyRecord.order_id == order_id, IdempotencyRecord.state == IN_PROGRESS
        )
    )
    return result.scalars().first()


async def attach_order(
    session: AsyncSession, customer_id: str, key: str, order_id: str, now: datetime
) -> None:
    await session.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.customer_id == customer_id,
            IdempotencyRecord.key == key,
        )
        .values(order_id=order_id, updated_at=now)
    )


async def complete_record(
    session: AsyncSession, order_id: str, status: int, body: str, now: datetime
) -> None:
    await session.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.order_id == order_id,
            IdempotencyRecord.state == IN_PROGRESS,
        )
        .values(state="completed", response_status=status, response_body=body, updated_at=now)
    )


async def delete_record_for_order(session: AsyncSession, order_id: str) -> None:
    # By order id, never by key: the client may already have claimed the key again.
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.order_id == order_id, IdempotencyRecord.state == IN_PROGRESS
        )
    )


async def delete_orphan_claim(session: AsyncSession, customer_id: str, key: str) -> None:
    """Drop a claim that never got its order (the order insert failed)."""
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.customer_id == customer_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.order_id.is_(None),
            IdempotencyRecord.state == IN_PROGRESS,
        )
    )


async def delete_stale_orphan_claims(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.order_id.is_(None),
            IdempotencyRecord.state == IN_PROGRESS,
            IdempotencyRecord.updated_at <= cutoff,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def get_order(session: AsyncSession, order_id: str) -> CustomerOrder | None:
    return await session.get(CustomerOrder, order_id)


async def update_order(session: AsyncSession, order_id: str, **values: Any) -> None:
    await session.execute(
        update(CustomerOrder).where(CustomerOrder.id == order_id).values(**values)
    )


async def set_item_prices(session: AsyncSession, order_id: str, prices: dict[str, int]) -> None:
    for sku, price in prices.items():
        await session.execute(
            update(OrderItem)
            .where(OrderItem.order_id == order_id, OrderItem.sku == sku)
            .values(unit_price_cents=price)
        )


async def stale_sagas(
    session: AsyncSession, cutoff: datetime, limit: int = 100
) -> list[CustomerOrder]:
    result = await session.execute(
        select(CustomerOrder)
        .where(CustomerOrder.saga_state.in_(OPEN_SAGA_STATES), CustomerOrder.updated_at <= cutoff)
        .order_by(CustomerOrder.updated_at)
        .limit(limit)
    )
    return list(result.scalars().all())


async def lease_saga(session: AsyncSession, order_id: str, seen: datetime, now: datetime) -> bool:
    """Compare-and-set on updated_at, so two recovery passes never work one saga at once."""
    result = await session.execute(
        update(CustomerOrder)
        .where(
            CustomerOrder.id == order_id,
            CustomerOrder.updated_at == seen,
        )
        .values(updated_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
