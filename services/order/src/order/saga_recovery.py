"""Recovery of sagas their request left behind (crash, timeout, downstream outage).

Per saga state:
- pending / reserving / reserved: fail the order, release any hold, free the key.
- charging: ask payment; a succeeded charge continues as `charged`, otherwise as above.
- charged: commit the hold and confirm, storing the 201 for the waiting key; a hold that can
  no longer be committed is compensated (refund, release, fail, free the key).
- compensating: finish releasing and refunding.
"""

from __future__ import annotations

import logging

from order import saga
from order.exceptions import CheckoutUnavailableError
from order.models import CHARGED, CHARGING, COMPENSATING, CustomerOrder
from order.saga import Checkout, Undo

logger = logging.getLogger("order.saga_recovery")


async def recover_one(checkout: Checkout, order: CustomerOrder) -> None:
    """Move one abandoned saga to a final state (raises if a downstream is still out)."""
    state = order.saga_state
    if state == COMPENSATING:
        undo = Undo(
            reservation_id=order.reservation_id, charge_id=order.charge_id, maybe_charged=True
        )
        await saga.compensate(checkout, order.id, undo)
        return
    if state == CHARGING:
        charges = await checkout.payment.charges_for(order.id)
        paid = [
            c for c in charges if c.status == "succeeded" and c.amount_cents == order.total_cents
        ]
        if not paid:
            await _abandon(checkout, order)
            return
        await saga.mark_charged(checkout, order, paid[0].id)
        state = CHARGED
    if state == CHARGED:
        async with checkout.unit_of_work() as orders:
            waiting = await orders.record_for_order(order.id)
        if waiting is None:
            # Nobody can receive a confirmation (the client was told it failed): undo.
            await _abandon(checkout, order)
            return
        try:
            await saga.finish_charged(checkout, order)
        except CheckoutUnavailableError as exc:
            logger.info("order %s not finished yet: %s", order.id, exc)
        return
    await _abandon(checkout, order)


async def _abandon(checkout: Checkout, order: CustomerOrder) -> None:
    undo = Undo(reservation_id=order.reservation_id, charge_id=order.charge_id)
    await saga.fail(checkout, order.id, "abandoned", undo=undo)
