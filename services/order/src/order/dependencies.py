"""Request dependencies over lifespan state, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from servicekit import context

from order.exceptions import MissingCustomerError
from order.saga import Checkout


async def _checkout(request: Request) -> Checkout:
    checkout: Checkout = request.state.checkout
    return checkout


async def _customer() -> str:
    # Set by the service auth middleware from X-Customer-ID; absent on a call made for nobody.
    customer = context.get(context.CUSTOMER_ID)
    if not customer:
        raise MissingCustomerError("X-Customer-ID is required")
    return customer


CheckoutDep = Annotated[Checkout, Depends(_checkout)]
CustomerDep = Annotated[str, Depends(_customer)]
