"""The payment service app: `python -m servicekit.serve payment.main:create_app`."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from servicekit import Database, FaultInjector, create_service_app, faults_router

from payment.config import PaymentSettings
from payment.repository import SqlChargeRepository
from payment.routes import router
from payment.service import ChargeService


class State(TypedDict):
    database: Database
    settings: PaymentSettings
    faults: FaultInjector
    service: ChargeService


def create_app(
    settings: PaymentSettings | None = None,
    *,
    rng: random.Random | None = None,
    faults: FaultInjector | None = None,
) -> FastAPI:
    """Build the app; `rng` and `faults` (default: from settings) are seams for tests."""
    settings = settings or PaymentSettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        database = Database.from_settings(settings)
        try:
            yield {
                "database": database,
                "settings": settings,
                # One injector for the app's life: /internal/faults retunes it at runtime.
                "faults": faults
                or FaultInjector.from_settings(settings, service=settings.service_name, rng=rng),
                "service": ChargeService(
                    database.unit_of_work(SqlChargeRepository),
                    decline_above_cents=settings.decline_above_cents,
                ),
            }
        finally:
            await database.dispose()

    return create_service_app(
        settings,
        title="payment",
        description="A simulated payment provider: idempotent charges and refunds.",
        lifespan=lifespan,
        routers=[router, faults_router],
    )
