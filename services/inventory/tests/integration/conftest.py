"""Integration fixtures: a fresh migrated database per test (PostgreSQL or SQLite), the app
driven in-process with its lifespan, and direct access to stock levels for assertions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from inventory.config import InventorySettings
from inventory.main import create_app
from inventory.models import Product, Reservation
from inventory.repository import SqlInventoryRepository
from servicekit import Database, create_engine, mint_service_token
from servicekit.testing import lifespan_client
from sqlalchemy import func, select

TOKEN = "integration-test-service-token"
# A signed credential for inventory, valid longer than any test run.
AUTH = {
    "X-Service-Token": mint_service_token(
        TOKEN, caller="test", audience="inventory", ttl_seconds=3600
    )
}


def make_settings(url: str, **overrides: Any) -> InventorySettings:
    values: dict[str, Any] = {
        "database_url": url,
        "environment": "test",
        "service_token": TOKEN,
        # 200 concurrent requests share one pool: let them queue instead of failing fast.
        "db_pool_size": 20,
        "db_max_overflow": 0,
        "db_pool_timeout": 30,
        # The sweeper stays out of the way unless a test asks for it.
        "reservation_sweep_seconds": 3600,
    } | overrides
    return InventorySettings(_env_file=None, **values)


class Store:
    """Direct database access for arranging products and checking what was written."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = Database(create_engine(url, name="inventory-tests"))

    async def add_product(self, sku: str, stock: int, price_cents: int = 1000) -> None:
        async with self.database.transaction() as session:
            await SqlInventoryRepository(session).add_missing_products(
                [
                    {
                        "sku": sku,
                        "name": sku,
                        "price_cents": price_cents,
                        "currency": "USD",
                        "stock": stock,
                        "reserved": 0,
                    }
                ]
            )

    async def levels(self, sku: str) -> tuple[int, int]:
        """(stock, reserved) of a product."""
        async with self.database.transaction() as session:
            product = await session.get(Product, sku)
            assert product is not None
            return product.stock, product.reserved

    async def count_reservations(self) -> int:
        async with self.database.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(Reservation)) or 0)


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_url(request: pytest.FixtureRequest, make_database: Any) -> str:
    url: str = await make_database(request.param, ["inventory"])
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    yield store
    await store.database.dispose()


AppClient = Callable[..., Any]


@pytest.fixture
def app_client(database_url: str, clock: Any) -> AppClient:
    """`async with app_client(**settings_overrides) as client:` an authorised client."""

    def open_client(*, headers: dict[str, str] | None = None, **overrides: Any) -> Any:
        app = create_app(make_settings(database_url, **overrides), clock=clock)
        return lifespan_client(app, headers=AUTH if headers is None else headers)

    return open_client


@pytest.fixture
async def client(app_client: AppClient) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as client:
        yield client
