"""Shared fixtures: in-memory fakes of inventory and payment speaking their HTTP contract.

The fakes are `httpx.MockTransport` handlers over a few dicts; each tier's conftest provides
`database_url` (SQLite for unit tests, the real PostgreSQL for integration tests).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from order.clients import InventoryClient, PaymentClient
from order.config import OrderSettings
from order.main import create_app
from order.repository import SqlOrderRepository
from order.service import OrderService
from servicekit import (
    Database,
    ServiceClient,
    ServiceError,
    create_engine,
    mint_service_token,
    verify_service_token,
)
from servicekit.testing import lifespan_client
from sqlalchemy import text

TOKEN = "test-service-token"
CUSTOMER = "cust-1"
HEADERS = {
    "X-Service-Token": mint_service_token(TOKEN, caller="test", audience="order", ttl_seconds=3600),
    "X-Customer-ID": CUSTOMER,
}


def authorised(request: httpx.Request, audience: str) -> bool:
    """What the real service checks: a token signed with TOKEN and minted for `audience`."""
    presented = request.headers.get("x-service-token")
    try:
        verify_service_token(presented, [TOKEN], audience=audience, now=time.time())
    except ServiceError:
        return False
    return True


def problem(status: int, slug: str, **headers: str) -> httpx.Response:
    body = {"type": f"/problems/{slug}", "title": slug, "status": status, "detail": slug}
    return httpx.Response(status, json=body, headers=headers)


class FakeInventory:
    """Products with available stock; reservations idempotent by order id."""

    def __init__(self, products: dict[str, tuple[int, int]], delay: float = 0.0) -> None:
        self.price = {sku: price for sku, (price, _) in products.items()}
        self.available = {sku: stock for sku, (_, stock) in products.items()}
        self.reservations: dict[str, dict[str, Any]] = {}
        self.delay = delay
        self.down = False
        self.commit_down = False
        #: Order ids whose reservation lookups raise, as a bug in a client would.
        self.broken_orders: set[str] = set()
        self.calls: list[str] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.delay:
            await asyncio.sleep(self.delay)
        if not authorised(request, "inventory"):
            return problem(401, "unauthorized")
        if self.down:
            return problem(503, "unavailable", **{"Retry-After": "1"})
        path, method = request.url.path, request.method
        if method == "POST" and path == "/reservations":
            return self._reserve(json.loads(request.content))
        if method == "GET" and path == "/reservations":
            order_id = request.url.params.get("order_id")
            if order_id in self.broken_orders:
                raise RuntimeError(f"fake inventory bug for {order_id}")
            found = [r for r in self.reservations.values() if r["order_id"] == order_id]
            return httpx.Response(200, json={"items": found})
        match = re.fullmatch(r"/reservations/([^/]+)/(commit|release)", path)
        if method == "POST" and match:
            if match.group(2) == "commit" and self.commit_down:
                return problem(503, "unavailable")
            return self._transition(match.group(1), match.group(2))
        return problem(404, "not-found")

    def _reserve(self, body: dict[str, Any]) -> httpx.Response:
        for existing in self.reservations.values():
            if existing["order_id"] == body["order_id"]:
                return httpx.Response(200, json=existing)
        items = body["items"]
        if any(i["sku"] not in self.price for i in items):
            return problem(422, "unknown-sku")
        if any(self.available[i["sku"]] < i["quantity"] for i in items):
            return problem(409, "out-of-stock")
        for i in items:
            self.available[i["sku"]] -= i["quantity"]
        lines = [{**i, "unit_price_cents": self.price[i["sku"]]} for i in items]
        now = datetime.now(UTC).isoformat()
        reservation = {
            "id": str(uuid.uuid4()),
            "order_id": body["order_id"],
            "status": "held",
            "items": lines,
            "currency": "USD",
            "total_cents": sum(i["quantity"] * i["unit_price_cents"] for i in lines),
            "expires_at": now,
            "created_at": now,
        }
        self.reservations[reservation["id"]] = reservation
        return httpx.Response(201, json=reservation)

    def _transition(self, reservation_id: str, action: str) -> httpx.Response:
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            return problem(404, "reservation-not-found")
        status = reservation["status"]
        if action == "commit":
            if status in ("released", "expired"):
                return problem(409, "reservation-not-held")
            reservation["status"] = "committed"
        else:
            if status == "committed":
                return problem(409, "reservation-committed")
            if status == "held":
                self._restock(reservation)
                reservation["status"] = "released"
        return httpx.Response(200, json=reservation)

    def _restock(self, reservation: dict[str, Any]) -> None:
        for i in reservation["items"]:
            self.available[i["sku"]] += i["quantity"]

    def expire(self, reservation_id: str) -> None:
        self._restock(self.reservations[reservation_id])
        self.reservations[reservation_id]["status"] = "expired"

    def statuses(self) -> list[str]:
        return [r["status"] for r in self.reservations.values()]


class FakePayment:
    """Charges idempotent by key; amounts above `decline_above` are declined (and recorded)."""

    def __init__(self, decline_above: int = 100_000, delay: float = 0.0) -> None:
        self.decline_above = decline_above
        self.charges: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, tuple[str, str]] = {}
        self.delay = delay
        self.down = False
        self.calls: list[str] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.delay:
            await asyncio.sleep(self.delay)
        if not authorised(request, "payment"):
            return problem(401, "unauthorized")
        if self.down:
            return problem(503, "injected-fault", **{"Retry-After": "1"})
        path, method = request.url.path, request.method
        if method == "POST" and path == "/charges":
            return self._charge(request)
        if method == "GET" and path == "/charges":
            order_id = request.url.params.get("order_id")
            found = [c for c in self.charges.values() if c["order_id"] == order_id]
            return httpx.Response(200, json={"items": found})
        match = re.fullmatch(r"/charges/([^/]+)/refund", path)
        if method == "POST" and match:
            charge = self.charges.get(match.group(1))
            if charge is None:
                return problem(404, "charge-not-found")
            if charge["status"] == "declined":
                return problem(409, "not-refundable")
            charge["status"] = "refunded"
            return httpx.Response(200, json=charge)
        return problem(404, "not-found")

    def _charge(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if not key:
            return problem(400, "missing-idempotency-key")
        body = json.loads(request.content)
        canonical = json.dumps(body, sort_keys=True)
        if key in self.by_key:
            seen, charge_id = self.by_key[key]
            if seen != canonical:
                return problem(422, "idempotency-key-reused")
            charge = self.charges[charge_id]
            if charge["status"] == "declined":
                return problem(402, "payment-declined")
            return httpx.Response(200, json=charge)
        declined = body["amount_cents"] > self.decline_above
        charge = {
            "id": str(uuid.uuid4()),
            **body,
            "status": "declined" if declined else "succeeded",
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.charges[charge["id"]] = charge
        self.by_key[key] = (canonical, charge["id"])
        if declined:
            return problem(402, "payment-declined")
        return httpx.Response(201, json=charge)

    def statuses(self) -> list[str]:
        return [c["status"] for c in self.charges.values()]


@pytest.fixture
def inventory() -> FakeInventory:
    return FakeInventory({"SKU-1": (1250, 100), "SKU-2": (500, 5), "PRICEY": (200_000, 10)})


@pytest.fixture
def payment() -> FakePayment:
    return FakePayment()


def order_settings(database_url: str) -> OrderSettings:
    return OrderSettings(
        database_url=database_url,
        environment="test",
        service_token=TOKEN,
        saga_recovery_interval_seconds=0,
        saga_stale_seconds=3600,
        _env_file=None,
    )  # type: ignore[call-arg]


@pytest.fixture
async def client(
    database_url: str, inventory: FakeInventory, payment: FakePayment
) -> AsyncIterator[httpx.AsyncClient]:
    """The order app in-process (lifespan run) with both downstreams faked."""
    app = create_app(
        order_settings(database_url),
        inventory_transport=httpx.MockTransport(inventory.handler),
        payment_transport=httpx.MockTransport(payment.handler),
    )
    async with lifespan_client(app, headers=HEADERS) as http:
        yield http


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The service's database, for arranging rows and checking what was written."""
    database = Database(create_engine(database_url, name="order-test"))
    yield database
    await database.dispose()


@pytest.fixture
async def orders(
    database: Database, inventory: FakeInventory, payment: FakePayment
) -> AsyncIterator[OrderService]:
    """The order use cases without the app, for driving recovery directly."""
    inv = InventoryClient(
        ServiceClient(
            "inventory",
            "http://inventory",
            token=TOKEN,
            transport=httpx.MockTransport(inventory.handler),
        )
    )
    pay = PaymentClient(
        ServiceClient(
            "payment", "http://payment", token=TOKEN, transport=httpx.MockTransport(payment.handler)
        )
    )
    yield OrderService(database.unit_of_work(SqlOrderRepository), inv, pay)
    await inv.aclose()
    await pay.aclose()


Count = Callable[[str], Awaitable[int]]


@pytest.fixture
def count(database: Database) -> Count:
    """`await count("customer_order")`: rows in one of the service's tables."""

    async def run(table: str) -> int:
        assert table in ("customer_order", "order_item", "idempotency_record")
        async with database.transaction() as session:
            return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())

    return run
