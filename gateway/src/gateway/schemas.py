"""Public shapes, for the OpenAPI document. The gateway forwards bodies; services validate them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from servicekit.contract import SKU_PATTERN


class ProductPublic(BaseModel):
    sku: str
    name: str
    price_cents: int
    currency: str
    available: int = Field(description="Stock not reserved.")


class ProductPage(BaseModel):
    items: list[ProductPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class OrderLine(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int


class OrderPublic(BaseModel):
    id: str
    status: str = Field(description="`confirmed` on success.")
    items: list[OrderLine]
    total_cents: int
    currency: str
    created_at: str


ORDER_CREATE_SCHEMA: dict[str, Any] = {
    "title": "OrderCreate",
    "type": "object",
    "required": ["items"],
    "additionalProperties": False,
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "quantity"],
                "additionalProperties": False,
                "properties": {
                    "sku": {"type": "string", "pattern": SKU_PATTERN},
                    "quantity": {"type": "integer", "minimum": 1},
                },
            },
        }
    },
}
