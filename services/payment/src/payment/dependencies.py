"""Request dependencies: short functions over the lifespan state, exposed as `...Dep` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from payment.service import ChargeService


async def get_charge_service(request: Request) -> ChargeService:
    service: ChargeService = request.state.service
    return service


ChargeServiceDep = Annotated[ChargeService, Depends(get_charge_service)]
