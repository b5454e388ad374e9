"""Request and response bodies of the payment API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from servicekit.contract import CUSTOMER_ID_PATTERN
from servicekit.fields import WholeNumber

MAX_AMOUNT_CENTS = 10_000_000


class ChargeCreate(BaseModel):
    """Body of `POST /charges`."""

    model_config = ConfigDict(extra="forbid")

    order_id: uuid.UUID
    customer_id: str = Field(pattern=CUSTOMER_ID_PATTERN)
    # Money is integer cents: "100" and 100.5 are refused, never coerced (100.0 is the JSON
    # integer 100, as the schema says).
    amount_cents: WholeNumber = Field(ge=1, le=MAX_AMOUNT_CENTS)
    currency: Literal["USD"]


class ChargePublic(BaseModel):
    """A charge as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str
    customer_id: str
    amount_cents: int
    currency: str
    status: Literal["succeeded", "declined", "refunded"]
    created_at: datetime


class ChargeList(BaseModel):
    """Answer of `GET /charges?order_id=`."""

    items: list[ChargePublic]
