"""Request dependencies: short functions over the lifespan state, exposed as `...Dep` aliases."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from payment.exceptions import InvalidIdempotencyKeyError, MissingIdempotencyKeyError
from payment.service import ChargeService

#: Printable ASCII, 1..255 characters.
IDEMPOTENCY_KEY_PATTERN = r"^[ -~]{1,255}$"


async def get_charge_service(request: Request) -> ChargeService:
    service: ChargeService = request.state.service
    return service


ChargeServiceDep = Annotated[ChargeService, Depends(get_charge_service)]


async def get_idempotency_key(request: Request) -> str:
    # Read here rather than by Header(): a missing key is a 400 of the contract, so the route
    # documents the header as required itself (servicekit.edge.openapi.required_header).
    key = request.headers.get("idempotency-key")
    if key is None:
        raise MissingIdempotencyKeyError("POST /charges requires the Idempotency-Key header")
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise InvalidIdempotencyKeyError(
            "Idempotency-Key must be 1..255 printable ASCII characters"
        )
    return key


IdempotencyKeyDep = Annotated[str, Depends(get_idempotency_key)]
