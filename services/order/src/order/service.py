"""Use cases of the order service: place an order, read it, recover abandoned sagas.

Idempotency: a key is claimed by inserting its record (state in_progress) in a transaction
of its own, so exactly one request per (customer, key) runs the saga; the others see the
record and get the stored answer, 409 while it runs, or 422 when the body differs.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from servicekit import exemplar, traffic
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from order import forward, repository
from order.exceptions import IdempotencyKeyReusedError, OrderNotFoundError, RequestInFlightError
from order.models import COMPLETED, PENDING, CustomerOrder, IdempotencyRecord, OrderItem
from order.saga import Checkout, StoredResponse, to_public
from order.saga_recovery import recover_one
from order.schemas import OrderCreate, OrderPublic

logger = logging.getLogger("order.service")

#: Claim attempts when the key is freed between our insert and our read (a 503 released it).
CLAIM_ATTEMPTS = 3


async def place_order(
    checkout: Checkout, customer_id: str, key: str, body: OrderCreate
) -> StoredResponse:
    """Run the checkout once per (customer, key); replay its stored answer afterwards."""
    fingerprint = body.fingerprint()
    for _ in range(CLAIM_ATTEMPTS):
        if await _claim(checkout, customer_id, key, fingerprint):
            break
        async with checkout.database.transaction() as session:
            record = await repository.get_record(session, customer_id, key)
        if record is not None:
            answer = _answer_existing(record, fingerprint)
            checkout.metrics.idempotent_replays.labels(traffic()).inc(exemplar=exemplar())
            return answer
    else:
        raise RequestInFlightError("this idempotency key is busy; retry shortly")

    now = checkout.clock()
    order = CustomerOrder(
        id=str(uuid.uuid4()),
        customer_id=customer_id,
        status=PENDING,
        saga_state=PENDING,
        total_cents=0,
        currency="USD",
        created_at=now,
        updated_at=now,
    )
    order.items = [
        OrderItem(sku=item.sku, quantity=item.quantity, position=position)
        for position, item in enumerate(body.items)
    ]
    try:
        async with checkout.database.transaction() as session:
            session.add(order)
            await repository.attach_order(session, customer_id, key, order.id, now)
    except BaseException:
        await _free_claim(checkout, customer_id, key)
        raise
    return await forward.run(checkout, order, body.items)


async def _claim(checkout: Checkout, customer_id: str, key: str, fingerprint: str) -> bool:
    try:
        async with checkout.database.transaction() as session:
            await repository.insert_record(session, customer_id, key, fingerprint, checkout.clock())
    except IntegrityError:
        return False
    return True


def _answer_existing(record: IdempotencyRecord, fingerprint: str) -> StoredResponse:
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError("this idempotency key was used with a different body")
    if record.state == COMPLETED and record.response_status and record.response_body is not None:
        return StoredResponse(record.response_status, record.response_body.encode(), replayed=True)
    raise RequestInFlightError("a request with this idempotency key is still running")


async def _free_claim(checkout: Checkout, customer_id: str, key: str) -> None:
    # Best effort: if the database is down, the recovery pass drops the orphan claim later.
    try:
        async with checkout.database.transaction() as session:
            await repository.delete_orphan_claim(session, customer_id, key)
    except Exception:
        logger.warning("could not free idempotency claim", exc_info=True)


async def read_order(session: AsyncSession, customer_id: str, order_id: str) -> OrderPublic:
    """The order if it belongs to `customer_id`; anything else is not found."""
    try:
        canonical = str(uuid.UUID(order_id))
    except ValueError:
        raise OrderNotFoundError(f"no order {order_id[:64]!r}") from None
    order = await repository.get_order(session, canonical)
    if order is None or order.customer_id != customer_id:
        raise OrderNotFoundError(f"no order {canonical!r}")
    return to_public(order)


async def recover_sagas(checkout: Checkout, *, stale_seconds: float) -> int:
    """Resume or compensate sagas untouched for `stale_seconds`; returns how many were tried."""
    now = checkout.clock()
    cutoff = now - timedelta(seconds=stale_seconds)
    async with checkout.database.transaction() as session:
        orders = await repository.stale_sagas(session, cutoff)
        await repository.delete_stale_orphan_claims(session, cutoff)
    tried = 0
    for order in orders:
        try:
            async with checkout.database.transaction() as session:
                leased = await repository.lease_saga(
                    session, order.id, order.updated_at, checkout.clock()
                )
            if not leased:
                continue  # another worker (or the request itself) touched it meanwhile
            tried += 1
            await recover_one(checkout, order)
        except Exception:
            # One saga's trouble must not stop the others; it is retried on the next pass.
            logger.exception("recovery of order %s failed", order.id)
    return tried
