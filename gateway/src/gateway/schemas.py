"""Public shapes, for the OpenAPI document. The gateway forwards bodies; services validate them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
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


class CanaryRouteUpdate(BaseModel):
    """A canary route: `weight` percent of the service's calls go to `upstream`."""

    model_config = ConfigDict(extra="forbid")

    upstream: str = Field(
        max_length=200,
        description="`http://127.0.0.1:<port>` (loopback with a port) or an allow-listed host.",
    )
    weight: float = Field(
        ge=0, le=100, allow_inf_nan=False, description="Percent of calls; 0.5 is one in 200."
    )
    version: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    step: str | None = Field(
        default=None, max_length=64, description="Where the rollout stands, as its driver says."
    )


class CanaryRoutePublic(BaseModel):
    """A service's routing as every caller of it follows it now."""

    service: str
    stable: str = Field(description="The stable upstream, as the gateway is configured.")
    upstream: str | None = Field(description="The canary upstream; null without a canary.")
    weight: float
    version: str | None
    step: str | None
