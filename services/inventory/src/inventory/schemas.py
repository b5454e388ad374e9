"""Request and response bodies of the internal API (bounds on every input field)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from servicekit.contract import SKU_PATTERN

Sku = Annotated[str, Field(pattern=SKU_PATTERN, min_length=1, max_length=64)]
MAX_ITEMS = 50
MAX_QUANTITY = 1000
MAX_TTL_SECONDS = 3600
MAX_PAGE = 100
DEFAULT_PAGE = 20

ReservationStatusName = Literal["held", "committed", "released", "expired"]


class ProductPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    price_cents: int
    currency: str
    available: int


class ProductPage(BaseModel):
    items: list[ProductPublic]
    next_cursor: str | None


class ReservationItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class ReservationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: UUID
    items: list[ReservationItemCreate] = Field(min_length=1, max_length=MAX_ITEMS)
    #: None means the service default (`INVENTORY_DEFAULT_TTL_SECONDS`, 300).
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_TTL_SECONDS)

    @field_validator("items")
    @classmethod
    def _skus_unique(cls, items: list[ReservationItemCreate]) -> list[ReservationItemCreate]:
        # One row per sku keeps the per-item stock update single and the lock order total.
        seen: set[str] = set()
        for item in items:
            if item.sku in seen:
                raise ValueError(
                    f"duplicate sku {item.sku!r} in items: "
                    "send each sku once with its total quantity"
                )
            seen.add(item.sku)
        return items


class ReservationItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int
    unit_price_cents: int


class ReservationPublic(BaseModel):
    id: str
    order_id: str
    status: ReservationStatusName
    items: list[ReservationItemPublic]
    currency: str
    total_cents: int
    expires_at: datetime
    created_at: datetime


class ReservationList(BaseModel):
    items: list[ReservationPublic]
