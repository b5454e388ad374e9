"""Typed clients for inventory and payment, over servicekit's `ServiceClient`.

Each call returns a validated model, raises `Rejected` for a deliberate 4xx answer of the
contract (out of stock, declined, not held...), or `UnavailableError` when the downstream
cannot be trusted: transport error, timeout, 408/429/5xx, or a body that is not what the
contract promises (a malformed answer is never used and never becomes a 500).

Every call goes through the downstream's circuit breaker (an open one raises `CircuitOpenError`,
an `UnavailableError`). Every write here is idempotent (by order id, reservation or charge id,
or the charge's Idempotency-Key), so each is marked `idempotent=True` and may be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from servicekit import ServiceClient, UnavailableError, context, contract

from order.schemas import Charge, ChargeList, OrderItemCreate, Reservation, ReservationList

M = TypeVar("M", bound=BaseModel)
#: Confirmation (commit) and compensation (release, refund) finish work already done: the
#: downstream sheds them last and lets them through its read-only mode (servicekit.admission).
CRITICAL = {contract.PRIORITY.name: context.CRITICAL}


class Rejected(Exception):
    """The downstream refused the call on purpose (a 4xx problem of its contract)."""

    def __init__(self, service: str, status: int, slug: str, detail: str) -> None:
        super().__init__(f"{service} answered {status} {slug}: {detail}")
        self.status = status
        self.slug = slug
        self.detail = detail


def _problem(response: httpx.Response) -> tuple[str, str]:
    """(slug, detail) of a problem body; tolerant of anything else."""
    try:
        body: Any = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    return slug, str(body.get("detail", ""))[:300]


def _parse(service: str, response: httpx.Response, model: type[M], ok: Sequence[int]) -> M:
    status = response.status_code
    if status in ok:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise UnavailableError(f"{service} sent a malformed answer", retry_after=1) from exc
    if 400 <= status < 500 and status not in (408, 429):
        slug, detail = _problem(response)
        raise Rejected(service, status, slug, detail)
    raise UnavailableError(f"{service} answered {status}", retry_after=1)


class InventoryClient:
    """Reservations at the inventory service."""

    def __init__(self, http: ServiceClient) -> None:
        self.http = http

    async def reserve(
        self, order_id: str, items: Sequence[OrderItemCreate], ttl_seconds: int
    ) -> Reservation:
        body = {
            "order_id": order_id,
            "items": [{"sku": i.sku, "quantity": i.quantity} for i in items],
            "ttl_seconds": ttl_seconds,
        }
        # Idempotent by order id (a second reserve answers the first hold): safe to retry.
        response = await self.http.request("POST", "/reservations", json=body, idempotent=True)
        return _parse("inventory", response, Reservation, (200, 201))

    async def commit(self, reservation_id: str) -> Reservation:
        response = await self.http.request(
            "POST", f"/reservations/{reservation_id}/commit", headers=CRITICAL, idempotent=True
        )
        return _parse("inventory", response, Reservation, (200,))

    async def release(self, reservation_id: str) -> Reservation:
        response = await self.http.request(
            "POST", f"/reservations/{reservation_id}/release", headers=CRITICAL, idempotent=True
        )
        return _parse("inventory", response, Reservation, (200,))

    async def reservations_for(self, order_id: str) -> list[Reservation]:
        response = await self.http.request("GET", "/reservations", params={"order_id": order_id})
        return _parse("inventory", response, ReservationList, (200,)).items

    async def aclose(self) -> None:
        await self.http.aclose()


class PaymentClient:
    """Charges and refunds at the payment service."""

    def __init__(self, http: ServiceClient) -> None:
        self.http = http

    def check_available(self) -> None:
        """Raise `CircuitOpenError` while payment's breaker is open (a charge would fail fast)."""
        self.http.breaker.check()

    async def charge(
        self, order_id: str, customer_id: str, amount_cents: int, currency: str
    ) -> Charge:
        # The order id is the idempotency key: a retried or recovered charge never doubles.
        body = {
            "order_id": order_id,
            "customer_id": customer_id,
            "amount_cents": amount_cents,
            "currency": currency,
        }
        response = await self.http.request(
            "POST",
            "/charges",
            json=body,
            headers={contract.IDEMPOTENCY_KEY.name: order_id},
            idempotent=True,
        )
        return _parse("payment", response, Charge, (200, 201))

    async def refund(self, charge_id: str) -> Charge:
        response = await self.http.request(
            "POST", f"/charges/{charge_id}/refund", headers=CRITICAL, idempotent=True
        )
        return _parse("payment", response, Charge, (200,))

    async def charges_for(self, order_id: str) -> list[Charge]:
        response = await self.http.request("GET", "/charges", params={"order_id": order_id})
        return _parse("payment", response, ChargeList, (200,)).items

    async def aclose(self) -> None:
        await self.http.aclose()
