"""App factory and lifespan: `uvicorn inventory.main:create_app --factory --port 8002`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TypedDict

from fastapi import FastAPI
from servicekit import Database, create_service_app

from inventory.config import InventorySettings
from inventory.repository import unit_of_work
from inventory.routes import router
from inventory.service import Clock, sweep_expired, utc_now

logger = logging.getLogger("inventory.sweeper")


class State(TypedDict):
    database: Database
    settings: InventorySettings
    clock: Clock


async def run_sweeper(database: Database, interval: float, clock: Clock) -> None:
    """Expire overdue reservations every `interval` seconds until cancelled."""
    uow = unit_of_work(database)
    while True:
        await asyncio.sleep(interval)
        try:
            expired = await sweep_expired(uow, clock)
        except Exception:
            # A failed sweep (database restarting, say) is retried next tick, never fatal.
            logger.exception("reservation sweep failed; retrying in %.1fs", interval)
            continue
        if expired:
            logger.info("expired %d reservation(s)", expired)


def create_app(settings: InventorySettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """Build the inventory app; `clock` is injectable so tests control expiry."""
    settings = settings or InventorySettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        database = Database.from_settings(settings)
        sweeper = asyncio.create_task(
            run_sweeper(database, settings.reservation_sweep_seconds, clock),
            name="inventory-reservation-sweeper",
        )
        try:
            yield {"database": database, "settings": settings, "clock": clock}
        finally:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            await database.dispose()

    app: FastAPI = create_service_app(
        settings,
        title="inventory",
        lifespan=lifespan,
        routers=[router],
        description="Products, stock and reservations with expiry.",
    )
    return app
