"""App factory and lifespan of the order service.

Run with `python -m servicekit.serve order.main:create_app --port 8001`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx
from fastapi import FastAPI
from servicekit import (
    Database,
    Downstreams,
    create_service_app,
    for_each_traffic,
    run_periodically,
)

from order.clients import InventoryClient, PaymentClient
from order.config import OrderSettings
from order.repository import SqlOrderRepository
from order.routes import router
from order.service import OrderService


class State(TypedDict):
    database: Database
    settings: OrderSettings
    service: OrderService


def create_app(
    settings: OrderSettings | None = None,
    *,
    inventory_transport: httpx.AsyncBaseTransport | None = None,
    payment_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the order app; transports are injectable so tests can fake the downstreams."""
    settings = settings or OrderSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        database = Database.from_settings(settings)
        # One circuit breaker per downstream (ORDER_BREAKER_*): an open payment breaker makes
        # checkout answer 503 at once, and the saga releases the stock it reserved.
        downstreams = Downstreams(settings, metrics=app.state.metrics)
        inventory = InventoryClient(
            downstreams.client("inventory", settings.inventory_url, transport=inventory_transport)
        )
        payment = PaymentClient(
            downstreams.client("payment", settings.payment_url, transport=payment_transport)
        )
        service = OrderService(
            database.unit_of_work(SqlOrderRepository),
            inventory,
            payment,
            reservation_ttl_seconds=settings.reservation_ttl_seconds,
            metrics=app.state.metrics,
        )

        async def recover() -> None:
            # Live sagas, then shadow ones (their calls carry the dye, their tables are shadow).
            await for_each_traffic(
                lambda: service.recover_sagas(stale_seconds=settings.saga_stale_seconds)
            )

        await downstreams.start()
        try:
            # Start-up pass, then periodic: sagas left behind by a crash get finished or undone.
            async with run_periodically(
                recover, name="saga-recovery", interval=settings.saga_recovery_interval_seconds
            ):
                yield {"database": database, "settings": settings, "service": service}
        finally:
            await downstreams.aclose()
            await database.dispose()

    return create_service_app(
        settings,
        title="order",
        lifespan=lifespan,
        routers=[router],
        description="Orders and the checkout saga.",
    )
