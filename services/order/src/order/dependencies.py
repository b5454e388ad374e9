"""Request dependencies over lifespan state, as `Annotated` aliases."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request
from servicekit import context

from order.exceptions import (
    InvalidIdempotencyKeyError,
    MissingCustomerError,
    MissingIdempotencyKeyError,
)
from order.service import OrderService

#: Printable ASCII, 1..255 characters (also the documented pattern of the header).
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


async def _order_service(request: Request) -> OrderService:
    service: OrderService = request.state.service
    return service


async def _customer() -> str:
    # Set by the service auth middleware from X-Customer-ID; absent on a call made for nobody.
    customer = context.get(context.CUSTOMER_ID)
    if not customer:
        raise MissingCustomerError("X-Customer-ID is required")
    return customer


async def _idempotency_key(request: Request) -> str:
    # Checked here rather than by Header(): the contract answers 400, not 422. The route
    # documents the header as required (servicekit.edge.openapi.required_header).
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        raise MissingIdempotencyKeyError("the Idempotency-Key header is required")
    if not _KEY.fullmatch(idempotency_key):
        raise InvalidIdempotencyKeyError(
            "Idempotency-Key must be 1..255 printable ASCII characters"
        )
    return idempotency_key


OrderServiceDep = Annotated[OrderService, Depends(_order_service)]
CustomerDep = Annotated[str, Depends(_customer)]
IdempotencyKeyDep = Annotated[str, Depends(_idempotency_key)]
