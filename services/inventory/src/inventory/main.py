"""App factory and lifespan: `python -m servicekit.serve inventory.main:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from servicekit import (
    Database,
    FaultInjector,
    create_service_app,
    faults_router,
    for_each_traffic,
    run_periodically,
)

from inventory.config import InventorySettings
from inventory.repository import SqlInventoryRepository
from inventory.routes import PRODUCT_READS, router
from inventory.service import Clock, InventoryService, utc_now

logger = logging.getLogger("inventory.sweeper")


class State(TypedDict):
    database: Database
    settings: InventorySettings
    faults: FaultInjector
    service: InventoryService


def create_app(settings: InventorySettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """Build the inventory app; `clock` is injectable so tests control expiry."""
    settings = settings or InventorySettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        database = Database.from_settings(settings)
        service = InventoryService(
            database.unit_of_work(SqlInventoryRepository),
            clock=clock,
            default_ttl_seconds=settings.default_ttl_seconds,
        )

        async def sweep() -> None:
            # The live tables, then the shadow ones (units of work follow the traffic kind).
            # A failed sweep is logged and retried on the next tick by run_periodically.
            expired = await for_each_traffic(service.sweep_expired)
            for kind, count in expired.items():
                if count:
                    logger.info("expired %d reservation(s)", count, extra={"traffic": kind})

        interval = settings.reservation_sweep_seconds
        try:
            async with run_periodically(
                sweep, name="reservation-sweeper", interval=interval, first_delay=interval
            ):
                yield {
                    "database": database,
                    "settings": settings,
                    "faults": FaultInjector.from_settings(settings, service="inventory"),
                    "service": service,
                }
        finally:
            await database.dispose()

    app: FastAPI = create_service_app(
        settings,
        title="inventory",
        lifespan=lifespan,
        routers=[router, faults_router],
        description="Products, stock and reservations with expiry.",
        # Product reads are the same for every caller: cache-aside (Redis when
        # INVENTORY_REDIS_URL is set), and served stale with X-Degraded: cache under pressure.
        cached_reads=PRODUCT_READS,
    )
    return app
