"""Use cases of the order service: `OrderService` places orders, reads them, recovers sagas.

Idempotency: a key is claimed by inserting its record (state in_progress) in a transaction
of its own, so exactly one request per (customer, key) runs the saga; the others see the
record and get the stored answer, 409 while it runs, or 422 when the body differs.

The saga itself (order.saga, order.forward, order.saga_recovery) is the domain process these
use cases start and resume; it writes each step in a short transaction of its own, opened
from the same `UnitOfWork`, before the downstream call it guards: one transaction per call,
never one per state (a checkout that is confirmed runs five).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from servicekit import Metrics, exemplar, traffic

from order import forward
from order.clients import InventoryClient, PaymentClient
from order.exceptions import IdempotencyKeyReusedError, OrderNotFoundError, RequestInFlightError
from order.models import (
    COMPLETED,
    PENDING,
    RESERVING,
    CustomerOrder,
    IdempotencyRecord,
    OrderItem,
)
from order.saga import Checkout, StoredResponse, to_public
from order.saga_recovery import recover_one
from order.schemas import OrderCreate, OrderPublic

logger = logging.getLogger("order.service")

Clock = Callable[[], datetime]
#: Claim attempts when the key is freed between our insert and our read (a 503 released it).
CLAIM_ATTEMPTS = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


class OrderRepository(Protocol):
    """What the use cases and the saga need from storage (`SqlOrderRepository`)."""

    async def claim_key(
        self, customer_id: str, key: str, fingerprint: str, now: datetime
    ) -> bool: ...
    async def get_record(self, customer_id: str, key: str) -> IdempotencyRecord | None: ...
    async def record_for_order(self, order_id: str) -> IdempotencyRecord | None: ...
    async def attach_order(
        self, customer_id: str, key: str, order_id: str, now: datetime
    ) -> None: ...
    async def complete_record(
        self, order_id: str, status: int, body: str, now: datetime
    ) -> None: ...
    async def delete_record_for_order(self, order_id: str) -> None: ...
    async def delete_orphan_claim(self, customer_id: str, key: str) -> None: ...
    async def delete_stale_orphan_claims(self, cutoff: datetime) -> int: ...
    async def add_order(self, order: CustomerOrder) -> None: ...
    async def get_order(self, order_id: str) -> CustomerOrder | None: ...
    async def update_order(self, order_id: str, **values: Any) -> None: ...
    async def set_item_prices(self, order_id: str, prices: dict[str, int]) -> None: ...
    async def stale_sagas(self, cutoff: datetime, limit: int = 100) -> list[CustomerOrder]: ...
    async def lease_saga(self, order_id: str, seen: datetime, now: datetime) -> bool: ...


#: Opens a transaction and yields a repository bound to it (committed on clean exit).
UnitOfWork = Callable[[], AbstractAsyncContextManager[OrderRepository]]


class OrderService:
    """Checkout and its recovery; one instance per app, shared with the recovery job."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        inventory: InventoryClient,
        payment: PaymentClient,
        *,
        reservation_ttl_seconds: int = 300,
        clock: Clock = utc_now,
        metrics: Metrics | None = None,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.clock = clock
        #: What the saga works with; `metrics` is the app's (`app.state.metrics`), or a
        #: private set when the service is driven without an app.
        self.checkout = Checkout(
            unit_of_work,
            inventory,
            payment,
            reservation_ttl_seconds=reservation_ttl_seconds,
            clock=clock,
            metrics=metrics if metrics is not None else Metrics("order"),
        )

    @property
    def metrics(self) -> Metrics:
        return self.checkout.metrics

    async def place_order(self, customer_id: str, key: str, body: OrderCreate) -> StoredResponse:
        """Run the checkout once per (customer, key); replay its stored answer afterwards."""
        fingerprint = body.fingerprint()
        for _ in range(CLAIM_ATTEMPTS):
            async with self.unit_of_work() as orders:
                claimed = await orders.claim_key(customer_id, key, fingerprint, self.clock())
            if claimed:
                break
            async with self.unit_of_work() as orders:
                record = await orders.get_record(customer_id, key)
            if record is not None:
                answer = _answer_existing(record, fingerprint)
                self.metrics.idempotent_replays.labels(traffic()).inc(exemplar=exemplar())
                return answer
        else:
            raise RequestInFlightError("this idempotency key is busy; retry shortly")

        now = self.clock()
        # Inserted as `reserving`: the state that guards the reserve call is written with the
        # order itself, not in a transaction of its own (recovery treats both alike).
        order = CustomerOrder(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            status=PENDING,
            saga_state=RESERVING,
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
            async with self.unit_of_work() as orders:
                await orders.add_order(order)
                await orders.attach_order(customer_id, key, order.id, now)
        except BaseException:
            await self._free_claim(customer_id, key)
            raise
        return await forward.run(self.checkout, order, body.items)

    async def _free_claim(self, customer_id: str, key: str) -> None:
        # Best effort: if the database is down, the recovery pass drops the orphan claim later.
        try:
            async with self.unit_of_work() as orders:
                await orders.delete_orphan_claim(customer_id, key)
        except Exception:
            logger.warning("could not free idempotency claim", exc_info=True)

    async def read_order(self, customer_id: str, order_id: str) -> OrderPublic:
        """The order if it belongs to `customer_id`; anything else is not found."""
        try:
            canonical = str(uuid.UUID(order_id))
        except ValueError:
            raise OrderNotFoundError(f"no order {order_id[:64]!r}") from None
        async with self.unit_of_work() as orders:
            order = await orders.get_order(canonical)
            if order is None or order.customer_id != customer_id:
                raise OrderNotFoundError(f"no order {canonical!r}")
            return to_public(order)

    async def recover_sagas(self, *, stale_seconds: float) -> int:
        """Resume or compensate sagas untouched for `stale_seconds`; returns how many were tried."""
        cutoff = self.clock() - timedelta(seconds=stale_seconds)
        async with self.unit_of_work() as orders:
            stale = await orders.stale_sagas(cutoff)
            await orders.delete_stale_orphan_claims(cutoff)
        tried = 0
        for order in stale:
            try:
                async with self.unit_of_work() as orders:
                    leased = await orders.lease_saga(order.id, order.updated_at, self.clock())
                if not leased:
                    continue  # another worker (or the request itself) touched it meanwhile
                tried += 1
                await recover_one(self.checkout, order)
            except Exception:
                # One saga's trouble must not stop the others; it is retried on the next pass.
                logger.exception("recovery of order %s failed", order.id)
        return tried


def _answer_existing(record: IdempotencyRecord, fingerprint: str) -> StoredResponse:
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError("this idempotency key was used with a different body")
    if record.state == COMPLETED and record.response_status and record.response_body is not None:
        return StoredResponse(record.response_status, record.response_body.encode(), replayed=True)
    raise RequestInFlightError("a request with this idempotency key is still running")
