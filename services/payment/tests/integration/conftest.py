"""Integration fixtures: the app in-process on a fresh database, PostgreSQL and SQLite."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from payment.config import PaymentSettings
from payment.main import create_app
from servicekit import FaultInjector, create_engine, mint_service_token
from servicekit.testing import MakeDatabase, lifespan_client
from sqlalchemy import text

TOKEN = "integration-service-token"
# A signed credential for payment, valid longer than any test run.
AUTH = {
    "X-Service-Token": mint_service_token(
        TOKEN, caller="test", audience="payment", ttl_seconds=3600
    )
}

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_url(request: pytest.FixtureRequest, make_database: MakeDatabase) -> str:
    url: str = await make_database(request.param, ["payment"])
    return url


@pytest.fixture
def payment_client(database_url: str) -> ClientFactory:
    """`async with payment_client(fault_error_rate=1.0) as client:`, credential set."""

    @asynccontextmanager
    async def open_client(
        *,
        headers: dict[str, str] | None = None,
        faults: FaultInjector | None = None,
        **overrides: Any,
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = PaymentSettings(
            database_url=database_url, environment="test", service_token=TOKEN, **overrides
        )
        app = create_app(settings, rng=random.Random(7), faults=faults)
        async with lifespan_client(app, headers=AUTH if headers is None else headers) as client:
            yield client

    return open_client


@pytest.fixture
async def client(payment_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with payment_client() as opened:
        yield opened


@pytest.fixture
def count_charges(database_url: str) -> Callable[..., Any]:
    """Count charge rows straight from the database, behind the app's back."""

    async def count() -> int:
        engine = create_engine(database_url, name="payment-tests")
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(text("SELECT count(*) FROM charge"))).scalar_one())
        finally:
            await engine.dispose()

    return count
