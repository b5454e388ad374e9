"""The forward path of the checkout saga, run inside POST /orders."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from servicekit import CircuitOpenError, ServiceError, UnavailableError

from order import saga
from order.clients import Rejected
from order.exceptions import (
    AmountOutOfRangeError,
    CheckoutUnavailableError,
    OutOfStockError,
    PaymentDeclinedError,
    UnknownSkuError,
)
from order.models import CHARGING, CustomerOrder
from order.saga import Checkout, StoredResponse, Undo
from order.schemas import Charge, OrderItemCreate

logger = logging.getLogger("order.forward")

#: The payment contract accepts amounts up to this many cents.
MAX_AMOUNT_CENTS = 10_000_000


async def run(
    checkout: Checkout, order: CustomerOrder, items: Sequence[OrderItemCreate]
) -> StoredResponse:
    """Reserve, charge, commit and confirm `order`; answers or raises a 503."""
    try:
        checkout.payment.check_available()
    except CircuitOpenError as exc:
        # Payment's breaker is open: this checkout cannot finish, so fail before holding stock
        # (a reserve-then-release per request would only load inventory during the outage).
        await saga.fail(checkout, order.id, "payment-unavailable")  # nothing held: no undo
        raise CheckoutUnavailableError(
            "payment is failing; checkouts are paused", retry_after=exc.retry_after
        ) from exc
    # The order was inserted `reserving` (OrderService.place_order): the reserve is guarded.
    try:
        reservation = await checkout.inventory.reserve(
            order.id, items, checkout.reservation_ttl_seconds
        )
        total = saga.check_reservation(reservation, order.id, items)
    except Rejected as exc:
        if exc.status == 409:
            return await _answer(checkout, order, OutOfStockError(exc.detail or "not enough stock"))
        if exc.status == 422:
            return await _answer(checkout, order, UnknownSkuError(exc.detail or "unknown sku"))
        await saga.fail(checkout, order.id, "inventory-refused", undo=Undo())
        raise CheckoutUnavailableError("inventory refused the reservation") from exc
    except UnavailableError as exc:
        # The hold may exist although its answer was lost: compensation looks it up.
        await saga.fail(checkout, order.id, "inventory-unavailable", undo=Undo())
        raise CheckoutUnavailableError("inventory unavailable; retry shortly") from exc

    undo_hold = Undo(reservation_id=reservation.id)
    if not 1 <= total <= MAX_AMOUNT_CENTS:
        error = AmountOutOfRangeError(f"order total {total} cents is outside 1..{MAX_AMOUNT_CENTS}")
        return await _answer(checkout, order, error, undo_hold)
    # What the reservation fixed and the state guarding the charge, in one transaction: nothing
    # happens between them, so a separate `reserved` write would only cost a round trip.
    # (Recovery fails a `charging` saga that has no charge, exactly as a `reserved` one.)
    prices = {i.sku: i.unit_price_cents for i in reservation.items}
    async with checkout.unit_of_work() as orders:
        await orders.update_order(
            order.id,
            saga_state=CHARGING,
            reservation_id=reservation.id,
            total_cents=total,
            currency=reservation.currency,
            updated_at=checkout.clock(),
        )
        await orders.set_item_prices(order.id, prices)
    order.reservation_id, order.total_cents, order.currency = (
        reservation.id,
        total,
        reservation.currency,
    )
    for item in order.items:
        item.unit_price_cents = prices.get(item.sku)

    try:
        charge = await checkout.payment.charge(order.id, order.customer_id, total, order.currency)
        saga.check_charge(charge, order.id, total)
    except Rejected as exc:
        if exc.status == 402:
            return await _answer(
                checkout, order, PaymentDeclinedError(exc.detail or "declined"), undo_hold
            )
        await saga.fail(checkout, order.id, "payment-refused", undo=undo_hold)
        raise CheckoutUnavailableError("payment refused the charge") from exc
    except CircuitOpenError as exc:
        # The breaker refused before anything was sent (see ServiceClient.request): no charge
        # can exist, so the stock is released at once and nothing is left for recovery.
        await saga.fail(checkout, order.id, "payment-unavailable", undo=undo_hold)
        raise CheckoutUnavailableError(
            "payment is failing; checkouts are paused", retry_after=exc.retry_after
        ) from exc
    except UnavailableError as exc:
        found = await _charge_after_failure(checkout, order.id, total)
        if found is None:
            maybe = Undo(reservation_id=reservation.id, maybe_charged=True)
            await saga.fail(checkout, order.id, "payment-unavailable", undo=maybe)
            raise CheckoutUnavailableError("payment unavailable; retry shortly") from exc
        charge = found
    await saga.mark_charged(checkout, order, charge.id)
    return await saga.finish_charged(checkout, order)


async def _answer(
    checkout: Checkout, order: CustomerOrder, error: ServiceError, undo: Undo | None = None
) -> StoredResponse:
    stored = await saga.fail(checkout, order.id, error.slug, answer=error, undo=undo)
    assert stored is not None
    return stored


async def _charge_after_failure(checkout: Checkout, order_id: str, total: int) -> Charge | None:
    """The charge a failed call may still have made (a lost answer), or None if unknown/absent."""
    try:
        charges = await checkout.payment.charges_for(order_id)
    except (UnavailableError, Rejected):
        return None
    for charge in charges:
        if charge.status == "succeeded" and charge.amount_cents == total:
            return charge
    return None
