"""Request and response bodies of the order API, and the downstream answers it relies on."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from servicekit.contract import ID_PATTERN, SKU_PATTERN
from servicekit.fields import WholeNumber


class OrderItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(pattern=SKU_PATTERN, max_length=64)
    quantity: WholeNumber = Field(ge=1, le=1000)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[OrderItemCreate] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique_skus(self) -> OrderCreate:
        skus = [item.sku for item in self.items]
        if len(set(skus)) != len(skus):
            raise ValueError("each sku may appear only once per order")
        return self

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: sorted keys, no spaces, items sorted by sku.

        Item order carries no meaning (skus are unique), so a reordered body is the same request.
        """
        items = sorted(self.model_dump(mode="json")["items"], key=lambda item: item["sku"])
        canonical = json.dumps({"items": items}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class OrderItemPublic(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int | None


class OrderPublic(BaseModel):
    id: str
    status: Literal["pending", "confirmed", "failed"]
    items: list[OrderItemPublic]
    total_cents: int
    currency: str
    created_at: datetime


# Downstream answers: validated before use; anything else counts as the downstream failing.


class ReservationItem(BaseModel):
    sku: str
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=0)


class Reservation(BaseModel):
    # Ids go into URL paths of later calls, hence the strict pattern.
    id: str = Field(pattern=ID_PATTERN)
    order_id: str
    status: Literal["held", "committed", "released", "expired"]
    items: list[ReservationItem]
    currency: str = Field(min_length=3, max_length=3)
    total_cents: int = Field(ge=0)


class ReservationList(BaseModel):
    items: list[Reservation]


class Charge(BaseModel):
    id: str = Field(pattern=ID_PATTERN)
    order_id: str
    amount_cents: int
    currency: str
    status: Literal["succeeded", "declined", "refunded"]


class ChargeList(BaseModel):
    items: list[Charge]
