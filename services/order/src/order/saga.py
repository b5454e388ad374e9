"""The checkout saga: reserve stock -> charge -> commit the reservation -> confirm.

Each step is written to the database (its own short transaction) before the call it guards,
so a crash at any point leaves a `saga_state` the recovery pass can resume or compensate.
A failure first marks the order failed and `compensating` (and answers or frees the
idempotency record in that same transaction), then undoes what was done; if undoing fails,
the saga stays `compensating` and recovery retries it.

The confirming commit and the compensating release and refund go out with
`X-Request-Priority: critical` (order.clients): under load the downstream sheds them last and
admits them in its read-only mode, so a saga under way is finished or undone, not left hanging.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from servicekit import Metrics, ServiceError, UnavailableError, exemplar, traffic

from order.clients import InventoryClient, PaymentClient, Rejected
from order.exceptions import CheckoutUnavailableError, OutOfStockError, PaymentDeclinedError
from order.models import CHARGED, COMPENSATING, CONFIRMED, FAILED, CustomerOrder
from order.schemas import Charge, OrderItemCreate, OrderItemPublic, OrderPublic, Reservation

if TYPE_CHECKING:
    from order.service import UnitOfWork

logger = logging.getLogger("order.saga")


@dataclass(frozen=True)
class StoredResponse:
    """An answer to a POST /orders, exactly as stored in the idempotency record."""

    status: int
    body: bytes
    replayed: bool = False

    @property
    def media_type(self) -> str:
        return "application/json" if self.status < 400 else "application/problem+json"


#: Final outcomes of a saga (the `outcome` label of `servicekit_saga_outcomes_total`).
OUTCOMES = ("confirmed", "declined", "out_of_stock", "rejected", "failed")
#: Compensating actions (the `action` label of `servicekit_saga_compensations_total`).
ACTIONS = ("release", "refund")


@dataclass
class Checkout:
    """What the saga needs (built by `OrderService`): transactions, both downstreams, a clock,
    and the metrics its outcomes are counted in."""

    unit_of_work: UnitOfWork
    inventory: InventoryClient
    payment: PaymentClient
    reservation_ttl_seconds: int
    clock: Callable[[], datetime]
    metrics: Metrics

    def __post_init__(self) -> None:
        # Every series exists from the start, so dashboards and rates show 0, not "no data".
        for label in ("live", "shadow"):
            self.metrics.idempotent_replays.labels(label)
            for outcome in OUTCOMES:
                self.metrics.saga_outcomes.labels(outcome, label)
            for action in ACTIONS:
                self.metrics.saga_compensations.labels(action, label)

    def count_outcome(self, outcome: str) -> None:
        """Count a saga that reached its final outcome (once per saga)."""
        self.metrics.saga_outcomes.labels(outcome, traffic()).inc(exemplar=exemplar())


@dataclass(frozen=True)
class Undo:
    """What compensation must undo; None ids are looked up by order id."""

    reservation_id: str | None = None
    charge_id: str | None = None
    maybe_charged: bool = False


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_public(order: CustomerOrder) -> OrderPublic:
    return OrderPublic(
        id=order.id,
        status=order.status,
        items=[
            OrderItemPublic(sku=i.sku, quantity=i.quantity, unit_price_cents=i.unit_price_cents)
            for i in order.items
        ],
        total_cents=order.total_cents,
        currency=order.currency,
        created_at=as_utc(order.created_at),
    )


async def update(checkout: Checkout, order_id: str, **values: object) -> None:
    async with checkout.unit_of_work() as orders:
        await orders.update_order(order_id, updated_at=checkout.clock(), **values)


async def fail(
    checkout: Checkout,
    order_id: str,
    reason: str,
    *,
    answer: ServiceError | None = None,
    undo: Undo | None = None,
) -> StoredResponse | None:
    """Mark the order failed; store `answer` as the key's response, or free the key if None."""
    stored = None
    async with checkout.unit_of_work() as orders:
        await orders.update_order(
            order_id,
            status=FAILED,
            failure_reason=reason,
            saga_state=FAILED if undo is None else COMPENSATING,
            updated_at=checkout.clock(),
        )
        if answer is None:
            await orders.delete_record_for_order(order_id)
        else:
            body = answer.to_body()
            await orders.complete_record(order_id, answer.status, body.decode(), checkout.clock())
            stored = StoredResponse(answer.status, body)
    checkout.count_outcome(_outcome(answer))
    if undo is not None:
        await compensate(checkout, order_id, undo)
    return stored


def _outcome(answer: ServiceError | None) -> str:
    if answer is None:
        return "failed"  # a 503: the key is freed so the client may retry
    if isinstance(answer, PaymentDeclinedError):
        return "declined"
    if isinstance(answer, OutOfStockError):
        return "out_of_stock"
    return "rejected"  # unknown sku, amount out of range


async def compensate(checkout: Checkout, order_id: str, undo: Undo) -> bool:
    """Release the stock and refund the charge; True once nothing is left to undo."""
    try:
        if undo.reservation_id is not None:
            held = [undo.reservation_id]
        else:
            found = await checkout.inventory.reservations_for(order_id)
            held = [r.id for r in found if r.status == "held"]
        for reservation_id in held:
            if await _ignore_refusal(checkout.inventory.release(reservation_id)):
                _count_compensation(checkout, "release")
        if undo.charge_id is not None:
            if await _ignore_refusal(checkout.payment.refund(undo.charge_id)):
                _count_compensation(checkout, "refund")
        elif undo.maybe_charged:
            for charge in await checkout.payment.charges_for(order_id):
                if charge.status == "succeeded" and await _ignore_refusal(
                    checkout.payment.refund(charge.id)
                ):
                    _count_compensation(checkout, "refund")
    except (UnavailableError, Rejected) as exc:
        logger.warning("compensation of order %s postponed: %s", order_id, exc)
        return False
    await update(checkout, order_id, saga_state=FAILED)
    return True


def _count_compensation(checkout: Checkout, action: str) -> None:
    checkout.metrics.saga_compensations.labels(action, traffic()).inc(exemplar=exemplar())


async def _ignore_refusal(call: Awaitable[object]) -> bool:
    """True if the step was done; False if there was nothing to undo."""
    # 409/404: already committed, released, expired, or a declined charge: nothing to undo
    # here. Any other refusal (a misconfigured credential) postpones the compensation.
    try:
        await call
    except Rejected as exc:
        if exc.status not in (404, 409):
            raise
        logger.warning("compensation step refused: %s", exc)
        return False
    return True


def check_reservation(
    reservation: Reservation, order_id: str, items: Sequence[OrderItemCreate]
) -> int:
    """The reservation's total, after checking it is the one we asked for."""
    wanted = {i.sku: i.quantity for i in items}
    got = {i.sku: i.quantity for i in reservation.items}
    total = sum(i.quantity * i.unit_price_cents for i in reservation.items)
    if reservation.order_id != order_id or wanted != got or total != reservation.total_cents:
        raise UnavailableError("inventory answered with a reservation that does not match")
    return total


def check_charge(charge: Charge, order_id: str, amount_cents: int) -> None:
    if (
        charge.order_id != order_id
        or charge.amount_cents != amount_cents
        or charge.status != "succeeded"
    ):
        raise UnavailableError("payment answered with a charge that does not match")


async def finish_charged(checkout: Checkout, order: CustomerOrder) -> StoredResponse:
    """Commit the reservation of a charged order and confirm it (request or recovery)."""
    assert order.reservation_id is not None
    try:
        await checkout.inventory.commit(order.reservation_id)
    except Rejected as exc:
        if exc.status not in (404, 409):
            raise CheckoutUnavailableError("inventory refused the commit; will retry") from exc
        # The hold expired or was released: the stock is gone, so the money goes back.
        logger.warning("order %s: reservation cannot be committed: %s", order.id, exc)
        await fail(
            checkout,
            order.id,
            "reservation-lost",
            undo=Undo(reservation_id=order.reservation_id, charge_id=order.charge_id),
        )
        raise CheckoutUnavailableError("the reservation expired; the charge is refunded") from exc
    except UnavailableError as exc:
        # Charged but not committed: stays `charged`, the key stays in flight until recovery.
        raise CheckoutUnavailableError(
            "inventory unavailable; the order will be completed"
        ) from exc
    return await confirm(checkout, order)


async def confirm(checkout: Checkout, order: CustomerOrder) -> StoredResponse:
    """Confirm the order and store its 201 answer in the same transaction.

    The answer is built from `order` as the saga holds it (its items priced by the
    reservation, or as loaded by recovery), not read back: the confirmation writes only the
    status, so the stored answer is what a read of the order returns.
    """
    now = checkout.clock()
    body = to_public(order).model_copy(update={"status": CONFIRMED}).model_dump_json()
    async with checkout.unit_of_work() as orders:
        await orders.update_order(order.id, status=CONFIRMED, saga_state=CONFIRMED, updated_at=now)
        await orders.complete_record(order.id, 201, body, now)
    order.status, order.saga_state = CONFIRMED, CONFIRMED
    checkout.count_outcome("confirmed")
    return StoredResponse(201, body.encode())


async def mark_charged(checkout: Checkout, order: CustomerOrder, charge_id: str) -> None:
    await update(checkout, order.id, saga_state=CHARGED, charge_id=charge_id)
    order.saga_state, order.charge_id = CHARGED, charge_id
