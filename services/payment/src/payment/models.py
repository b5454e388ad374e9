"""Tables of the payment service: `charge`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import servicekit
from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

STATUSES = ("succeeded", "declined", "refunded")


class Base(servicekit.TrafficMarked, servicekit.Base):
    """Every table has a shadow twin and a `traffic` column (servicekit.data.shadow)."""

    __abstract__ = True
    metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every dialect (SQLite drops the offset on storage)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if isinstance(value, datetime) else None


class Charge(Base):
    __tablename__ = "charge"
    __table_args__ = (
        # Idempotency keys are scoped per customer: two customers may pick the same key.
        UniqueConstraint(
            "customer_id", "idempotency_key", name="uq_charge_customer_id_idempotency_key"
        ),
        CheckConstraint("amount_cents > 0", name="ck_charge_amount_positive"),
        CheckConstraint("status IN ('succeeded', 'declined', 'refunded')", name="ck_charge_status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str] = mapped_column(String(36), index=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
