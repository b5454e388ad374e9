"""Tables of the inventory service: product, reservation, reservation_item."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import servicekit
from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Base(servicekit.TrafficMarked, servicekit.Base):
    """Every table has a shadow twin and a `traffic` column (servicekit.data.shadow)."""

    __abstract__ = True
    metadata = MetaData()


class ReservationStatus(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out on every backend.

    SQLite has no time zone type and hands back naive values; storing UTC everywhere keeps
    its text comparisons (`expires_at <= :now`) correct and lets us re-attach UTC on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass a timezone-aware value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Product(Base):
    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="ck_product_stock_nonnegative"),
        CheckConstraint("reserved >= 0", name="ck_product_reserved_nonnegative"),
        CheckConstraint("reserved <= stock", name="ck_product_reserved_within_stock"),
        CheckConstraint("price_cents >= 0", name="ck_product_price_nonnegative"),
    )

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def available(self) -> int:
        return self.stock - self.reserved


class Reservation(Base):
    __tablename__ = "reservation"
    __table_args__ = (
        CheckConstraint(
            "status IN ('held', 'committed', 'released', 'expired')", name="ck_reservation_status"
        ),
        UniqueConstraint("order_id", name="uq_reservation_order_id"),
        # The sweeper scans held reservations by expiry.
        Index("ix_reservation_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    items: Mapped[list[ReservationItem]] = relationship(
        order_by="ReservationItem.sku", lazy="raise"
    )


class ReservationItem(Base):
    __tablename__ = "reservation_item"
    __table_args__ = (CheckConstraint("quantity > 0", name="ck_reservation_item_quantity"),)

    reservation_id: Mapped[str] = mapped_column(
        ForeignKey("reservation.id", ondelete="CASCADE", name="fk_reservation_item_reservation"),
        primary_key=True,
    )
    sku: Mapped[str] = mapped_column(
        ForeignKey("product.sku", name="fk_reservation_item_product"), primary_key=True
    )
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)
