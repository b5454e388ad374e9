"""Database pool and readiness against the real PostgreSQL and Redis of this machine."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import servicekit as kit
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict
from servicekit.testing import lifespan_client
from sqlalchemy import text


class KitSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "kit-it"
    model_config = SettingsConfigDict(env_prefix="KITIT_", extra="ignore")


def build_app(settings: KitSettings) -> FastAPI:
    router = APIRouter()

    @router.post("/notes/{value}", status_code=201)
    async def create_note(value: str, session: kit.SessionDep) -> dict[str, str]:
        await session.execute(text("INSERT INTO note (value) VALUES (:v)"), {"v": value})
        if value == "fail":
            raise kit.ConflictError("rolled back")
        return {"value": value}

    @router.get("/notes")
    async def read_notes(session: kit.SessionDep) -> list[str]:
        rows = await session.execute(text("SELECT value FROM note ORDER BY value"))
        return [row[0] for row in rows]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        database = kit.Database.from_settings(settings)
        async with database.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS note (value VARCHAR(20))"))
        # No Redis here: the kit opens it when KITIT_REDIS_URL is set and /readyz checks it.
        try:
            yield {"database": database}
        finally:
            await database.dispose()

    return kit.create_service_app(
        settings, title="kit-it", lifespan=lifespan, routers=[router], internal=False
    )


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_url(request: pytest.FixtureRequest, make_database: Any) -> str:
    return str(await make_database(request.param, []))


async def test_session_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    app = build_app(KitSettings(database_url=database_url))
    async with lifespan_client(app) as client:
        assert (await client.post("/notes/kept")).status_code == 201
        assert (await client.post("/notes/fail")).status_code == 409
        assert (await client.get("/notes")).json() == ["kept"]


async def test_pool_is_named_after_the_service(make_database: Any) -> None:
    url = await make_database("postgresql", [])
    database = kit.Database.from_settings(KitSettings(database_url=url))
    try:
        async with database.engine.connect() as conn:
            name = (await conn.execute(text("SELECT current_setting('application_name')"))).scalar()
        assert name == "kit-it"
    finally:
        await database.dispose()


async def test_exhausted_pool_fails_fast_with_503(make_database: Any) -> None:
    url = await make_database("postgresql", [])
    settings = KitSettings(database_url=url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2)
    database = kit.Database.from_settings(settings)
    try:
        async with database.engine.connect():  # hold the only connection
            started = asyncio.get_running_loop().time()
            with pytest.raises(kit.UnavailableError, match="pool exhausted"):
                async with database.transaction() as session:
                    await session.execute(text("SELECT 1"))
            assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await database.dispose()


async def test_readiness_checks_database_and_redis(make_database: Any, redis_url: str) -> None:
    url = await make_database("postgresql", [])
    app = build_app(KitSettings(database_url=url, redis_url=redis_url))
    async with lifespan_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_unreachable_redis_makes_readyz_503_fast_while_healthz_stays_200(
    make_database: Any,
) -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    url = await make_database("sqlite", [])
    app = build_app(KitSettings(database_url=url, redis_url=dead))
    async with lifespan_client(app) as client:
        started = asyncio.get_running_loop().time()
        ready = await client.get("/readyz")
        elapsed = asyncio.get_running_loop().time() - started
        health = await client.get("/healthz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    assert ready.json()["checks"] == {"database": "ok", "redis": "failed"}
    assert elapsed < 1.5
    assert health.status_code == 200
