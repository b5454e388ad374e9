"""A tiny app built with the kit, without any database: what every service gets for free."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import servicekit as kit
from fastapi import APIRouter, BackgroundTasks, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict
from servicekit import context


class DemoSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "demo"
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=20)
    quantity: int = Field(ge=1, le=10)


def build_demo_app(
    *, internal: bool = True, max_body_bytes: int = 2048, **settings_overrides: Any
) -> FastAPI:
    settings = DemoSettings(max_body_bytes=max_body_bytes, **settings_overrides)
    router = APIRouter()
    writes: list[dict[str, Any]] = []

    @router.post("/items", status_code=201)
    async def create_item(item: ItemCreate) -> dict[str, Any]:
        writes.append(item.model_dump())
        return {"request_id": context.get(context.REQUEST_ID), **item.model_dump()}

    @router.post("/later", status_code=202)
    async def create_later(tasks: BackgroundTasks) -> None:
        def remember() -> None:  # runs after the response, in a worker thread
            writes.append({"background_request_id": context.get(context.REQUEST_ID)})

        tasks.add_task(remember)

    @router.get("/whoami")
    async def read_whoami() -> dict[str, Any]:
        return {"customer": context.get(context.CUSTOMER_ID)}

    @router.get("/boom")
    async def read_boom() -> None:
        raise RuntimeError("handler bug")

    @router.get("/must-get")
    async def read_must_get() -> str:
        return context.must_get(context.CUSTOMER_ID)

    @router.get("/conflict")
    async def read_conflict() -> None:
        raise kit.UnavailableError("downstream gone", retry_after=3)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}

    app = kit.create_service_app(
        settings, title="demo", lifespan=lifespan, routers=[router], internal=internal
    )
    app.state.writes = writes
    return app


TOKEN = {"X-Service-Token": "dev-service-token"}


@pytest.fixture
def demo_app() -> FastAPI:
    return build_demo_app()
