"""Data tier on the real PostgreSQL: a saturated pool or slow statements turn writes away.

A tiny app with a 2-connection pool is flooded with requests that hold a connection; the
measured checkout waits put it in read-only mode (writes 503, reads served), and it leaves the
mode by itself once the flood is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httpx
import servicekit as kit
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict
from servicekit.admission.readonly import ReadOnlyGuard
from servicekit.testing import lifespan_client
from sqlalchemy import text


class ShopSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "shop-ro"
    model_config = SettingsConfigDict(env_prefix="SHOPRO_", extra="ignore")


def build_app(settings: ShopSettings) -> FastAPI:
    router = APIRouter()

    @router.get("/notes")
    async def count_notes(session: kit.SessionDep) -> int:
        return int(await session.scalar(text("SELECT count(*) FROM note")) or 0)

    @router.post("/notes", status_code=201)
    async def create_note(session: kit.SessionDep) -> None:
        await session.execute(text("INSERT INTO note (value) VALUES ('n')"))

    @router.get("/slow")
    async def read_slowly(seconds: float, session: kit.SessionDep) -> None:
        await session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        database = kit.Database.from_settings(settings)
        async with database.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS note (value VARCHAR(20))"))
        try:
            yield {"database": database}
        finally:
            await database.dispose()

    return kit.create_service_app(
        settings, title="shop", lifespan=lifespan, routers=[router], internal=False
    )


def settings_for(url: str, **overrides: Any) -> ShopSettings:
    values: dict[str, Any] = {
        "database_url": url,
        "db_pool_size": 2,
        "db_max_overflow": 0,
        "db_pool_timeout": 20,
        "max_concurrency": 0,  # the service tier stays out of this test
        "read_only_window_seconds": 1.0,
        "read_only_min_seconds": 1.0,
    } | overrides
    return ShopSettings(_env_file=None, **values)


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def flood(client: httpx.AsyncClient, n: int, seconds: float) -> list[int]:
    responses = await asyncio.gather(
        *(client.get("/slow", params={"seconds": seconds}) for _ in range(n))
    )
    return [r.status_code for r in responses]


async def test_saturated_pool_turns_writes_away_then_recovers(make_database: Any) -> None:
    url = await make_database("postgresql", [])
    app = build_app(settings_for(url, read_only_pool_wait_ms=50))
    guard: ReadOnlyGuard = app.state.read_only
    async with lifespan_client(app) as client:
        assert (await client.post("/notes")).status_code == 201
        burst = asyncio.ensure_future(flood(client, 40, 0.05))
        await until(lambda: guard.read_only)
        refused = await client.post("/notes")
        read = await client.get("/notes")
        assert await burst == [200] * 40
        await until(lambda: not guard.read_only)
        accepted = await client.post("/notes")
        count = (await client.get("/notes")).json()
        metrics = (await client.get("/metrics")).text

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["type"] == "/problems/read-only"
    assert read.status_code == 200
    assert accepted.status_code == 201
    assert count == 2  # the refused write left nothing behind
    assert (
        'servicekit_shed_requests_total{reason="read_only",tier="data",traffic="live"} 1.0'
        in metrics
    )
    # The pool metrics come from the same measurements and from the pool itself.
    assert 'db_client_connection_max{pool_name="shop-ro"} 2.0' in metrics
    assert 'db_client_connection_count{pool_name="shop-ro",state="used"} 0.0' in metrics
    waits = next(
        line
        for line in metrics.splitlines()
        if line.startswith('db_client_connection_wait_time_seconds_count{pool_name="shop-ro"}')
    )
    assert float(waits.rsplit(" ", 1)[1]) >= 44


async def test_slow_statements_turn_writes_away(make_database: Any) -> None:
    url = await make_database("postgresql", [])
    app = build_app(
        settings_for(url, db_pool_size=10, read_only_db_latency_ms=100, read_only_pool_wait_ms=1e6)
    )
    guard: ReadOnlyGuard = app.state.read_only
    async with lifespan_client(app) as client:
        assert await flood(client, 20, 0.15) == [200] * 20
        await until(lambda: guard.read_only, timeout=0.5)  # decided at most every 0.1 s
        refused = await client.post("/notes")
        await until(lambda: not guard.read_only)
        accepted = await client.post("/notes")

    assert refused.status_code == 503
    assert accepted.status_code == 201


async def test_pool_timeouts_are_counted(make_database: Any) -> None:
    url = await make_database("postgresql", [])
    app = build_app(settings_for(url, db_pool_size=1, db_pool_timeout=0.1, read_only_enabled=False))
    async with lifespan_client(app) as client:
        statuses = await flood(client, 3, 0.5)
        metrics = (await client.get("/metrics")).text

    assert sorted(statuses) == [200, 503, 503]
    assert 'db_client_connection_timeouts_total{pool_name="shop-ro"} 2.0' in metrics
