"""Tables of the order service: orders, their items and idempotency records."""

from __future__ import annotations

from datetime import datetime

import servicekit
from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

# Order status (what the customer sees) and saga state (where the checkout stands).
PENDING, CONFIRMED, FAILED = "pending", "confirmed", "failed"
RESERVING, RESERVED, CHARGING, CHARGED = "reserving", "reserved", "charging", "charged"
#: The order has failed; releasing stock or refunding is still to be done (or retried).
COMPENSATING = "compensating"
#: Saga states a request may leave behind; the recovery pass resumes or compensates them.
OPEN_SAGA_STATES = (PENDING, RESERVING, RESERVED, CHARGING, CHARGED, COMPENSATING)

IN_PROGRESS, COMPLETED = "in_progress", "completed"


class Base(servicekit.TrafficMarked, servicekit.Base):
    """Every table has a shadow twin and a `traffic` column (servicekit.data.shadow)."""

    __abstract__ = True
    metadata = MetaData()


class CustomerOrder(Base):
    __tablename__ = "customer_order"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    saga_state: Mapped[str] = mapped_column(String(16), index=True)
    total_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    reservation_id: Mapped[str | None] = mapped_column(String(64))
    charge_id: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    items: Mapped[list[OrderItem]] = relationship(
        lazy="selectin", order_by="OrderItem.position", cascade="all, delete-orphan"
    )


class OrderItem(Base):
    __tablename__ = "order_item"

    order_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("customer_order.id", ondelete="CASCADE"), primary_key=True
    )
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Keeps the items in the order the customer sent them.
    position: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int | None] = mapped_column(BigInteger)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_record"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[str | None] = mapped_column(String(36), index=True)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
