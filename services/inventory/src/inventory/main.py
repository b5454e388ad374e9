"""App factory and lifespan: `uvicorn inventory.main:create_app --factory --port 8002`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from servicekit import Database, create_service_app, for_each_traffic, run_periodically
from servicekit.faults import FaultInjector, faults_router

from inventory.config import InventorySettings
from inventory.repository import unit_of_work
from inventory.routes import PRODUCT_READS, router
from inventory.service import Clock, sweep_expired, utc_now

logger = logging.getLogger("inventory.sweeper")


class State(TypedDict):
    database: Database
    settings: InventorySettings
    clock: Clock
    faults: FaultInjector


def sweeper(database: Database, clock: Clock) -> Callable[[], Awaitable[None]]:
    """One sweep, live and shadow: expire overdue reservations (retried when it fails)."""
    uow = unit_of_work(database)

    async def sweep() -> None:
        # The live tables, then the shadow ones (units of work follow the traffic kind).
        expired = await for_each_traffic(lambda: sweep_expired(uow, clock))
        for kind, count in expired.items():
            if count:
                logger.info("expired %d reservation(s)", count, extra={"traffic": kind})

    return sweep


def create_app(settings: InventorySettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """Build the inventory app; `clock` is injectable so tests control expiry."""
    settings = settings or InventorySettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        database = Database.from_settings(settings)
        interval = settings.reservation_sweep_seconds
        try:
            async with run_periodically(
                sweeper(database, clock),
                name="reservation-sweeper",
                interval=interval,
                first_delay=interval,
            ):
                yield {
                    "database": database,
                    "settings": settings,
                    "clock": clock,
                    "faults": FaultInjector.from_settings(settings, service="inventory"),
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
