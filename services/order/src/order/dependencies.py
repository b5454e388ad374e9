"""Request dependencies over lifespan state, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from servicekit import context

from order.exceptions import MissingCustomerError
from order.service import OrderService


async def _order_service(request: Request) -> OrderService:
    service: OrderService = request.state.service
    return service


async def _customer() -> str:
    # Set at the edge from X-Customer-ID of a credentialed caller; absent on a call for nobody.
    customer = context.get(context.CUSTOMER_ID)
    if not customer:
        raise MissingCustomerError("X-Customer-ID is required")
    return customer


OrderServiceDep = Annotated[OrderService, Depends(_order_service)]
CustomerDep = Annotated[str, Depends(_customer)]
