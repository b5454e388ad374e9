"""SQL of the payment service: charges, inserted first and updated only under a guard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from payment.models import Charge


class SqlChargeRepository:
    """Charges over one session (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_if_absent(self, values: dict[str, Any]) -> bool:
        """Insert a charge unless its (customer_id, idempotency_key) exists; True if inserted.

        A concurrent insert of the same key waits on the unique index until the first
        transaction ends, then does nothing: exactly one row, with no lock taken by hand.
        """
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Charge)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["customer_id", "idempotency_key"])
            .returning(Charge.id)
        )
        result = await self.session.execute(statement)
        return result.scalar_one_or_none() is not None

    async def get(self, charge_id: str) -> Charge | None:
        statement = select(Charge).where(Charge.id == charge_id)
        result = await self.session.execute(statement.execution_options(populate_existing=True))
        return result.scalar_one_or_none()

    async def get_by_key(self, customer_id: str, idempotency_key: str) -> Charge | None:
        statement = select(Charge).where(
            Charge.customer_id == customer_id, Charge.idempotency_key == idempotency_key
        )
        result = await self.session.execute(statement.execution_options(populate_existing=True))
        return result.scalar_one_or_none()

    async def list_by_order(self, order_id: str) -> list[Charge]:
        statement = select(Charge).where(Charge.order_id == order_id).order_by(Charge.created_at)
        return list((await self.session.scalars(statement)).all())

    async def mark_refunded(self, charge_id: str, refunded_at: datetime) -> bool:
        """Refund a succeeded charge; True only for the one call that changed it."""
        statement = (
            update(Charge)
            .where(Charge.id == charge_id, Charge.status == "succeeded")
            .values(status="refunded", refunded_at=refunded_at)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(statement)
        return bool(getattr(result, "rowcount", 0))
