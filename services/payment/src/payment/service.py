"""Use cases of the simulated payment provider: `ChargeService` (no HTTP here).

The provider (payment.provider) is simulated; dyed load-test charges are never sent to it,
only recorded in the shadow table.

Decline rule, the provider's only one: a charge whose `amount_cents` is above
`decline_above_cents` (env `PAYMENT_DECLINE_ABOVE_CENTS`, default 100000, i.e. $1,000.00) is
declined; anything at or below it succeeds. A declined charge is recorded like any other
(status "declined") and answered 402 "payment-declined", on the first call and on every replay.

Idempotency: a charge is identified by (customer_id, Idempotency-Key). The row is inserted
first and a conflicting insert does nothing, so concurrent identical calls create one charge
and all answer it. A replay whose body fingerprint (sha256 of the canonical JSON body) differs
is refused with 422 "idempotency-key-reused".

Refunds move succeeded -> refunded through one guarded UPDATE: concurrent refunds refund once,
and a refunded charge is answered as is. A declined charge cannot be refunded (409).

Each use case runs in one transaction it opens from its `UnitOfWork`: committed when it
returns, rolled back when it raises. A declined charge is returned, not raised, so it stays
recorded and its replays answer 402 too.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from payment.exceptions import ChargeNotFoundError, IdempotencyKeyReusedError, NotRefundableError
from payment.models import Charge
from payment.provider import SimulatedProvider
from payment.schemas import ChargeCreate

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def fingerprint(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ChargeRepository(Protocol):
    """What the use cases need from storage (`SqlChargeRepository`, or a fake in unit tests)."""

    async def insert_if_absent(self, values: dict[str, Any]) -> bool: ...
    async def get(self, charge_id: str) -> Charge | None: ...
    async def get_by_key(self, customer_id: str, idempotency_key: str) -> Charge | None: ...
    async def list_by_order(self, order_id: str) -> list[Charge]: ...
    async def mark_refunded(self, charge_id: str, refunded_at: datetime) -> bool: ...


#: Opens a transaction and yields a repository bound to it (committed on clean exit).
UnitOfWork = Callable[[], AbstractAsyncContextManager[ChargeRepository]]


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """The charge a call answers, and whether this call created it."""

    charge: Charge
    created: bool

    @property
    def declined(self) -> bool:
        return self.charge.status == "declined"


class ChargeService:
    """Charges and refunds; one instance per app, each call in its own transaction."""

    def __init__(
        self, unit_of_work: UnitOfWork, *, decline_above_cents: int, clock: Clock = utc_now
    ) -> None:
        self.unit_of_work = unit_of_work
        self.decline_above_cents = decline_above_cents
        self.clock = clock

    async def create_charge(self, body: ChargeCreate, idempotency_key: str) -> ChargeOutcome:
        """Charge once per (customer, key); a replay answers the recorded charge."""
        data = body.model_dump(mode="json")
        digest = fingerprint(data)
        # Sent to the provider for live traffic; dyed traffic is answered, never sent.
        decision = SimulatedProvider(self.decline_above_cents).decide(body.amount_cents)
        async with self.unit_of_work() as charges:
            created = await charges.insert_if_absent(
                {
                    **data,
                    "id": str(uuid.uuid4()),
                    "idempotency_key": idempotency_key,
                    "fingerprint": digest,
                    "status": decision.status,
                    "created_at": self.clock(),
                }
            )
            charge = await charges.get_by_key(body.customer_id, idempotency_key)
        if charge is None:  # pragma: no cover - the row exists once the insert returned
            raise RuntimeError("charge vanished after insert")
        if charge.fingerprint != digest:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used with a different request body"
            )
        return ChargeOutcome(charge, created)

    async def refund_charge(self, charge_id: str) -> Charge:
        """Refund a succeeded charge; refunding a refunded one answers it as is."""
        async with self.unit_of_work() as charges:
            await charges.mark_refunded(charge_id, self.clock())
            charge = await _load(charges, charge_id)
        if charge.status == "declined":
            raise NotRefundableError("a declined charge cannot be refunded")
        return charge

    async def read_charge(self, charge_id: str) -> Charge:
        """One charge, or ChargeNotFoundError."""
        async with self.unit_of_work() as charges:
            return await _load(charges, charge_id)

    async def list_charges(self, order_id: str) -> list[Charge]:
        """The charges of one order, oldest first."""
        async with self.unit_of_work() as charges:
            return await charges.list_by_order(order_id)


async def _load(charges: ChargeRepository, charge_id: str) -> Charge:
    charge = await charges.get(charge_id)
    if charge is None:
        raise ChargeNotFoundError(f"no charge {charge_id}")
    return charge
