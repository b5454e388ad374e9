"""A service whose handlers raise: served by a real uvicorn in test_recovery_server.py."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import servicekit as kit
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse
from pydantic_settings import SettingsConfigDict
from servicekit import context


class BoomSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "boom"
    model_config = SettingsConfigDict(env_prefix="BOOM_", extra="ignore")


def create_app() -> FastAPI:
    router = APIRouter()

    @router.get("/boom")
    async def read_boom() -> None:
        raise RuntimeError("handler bug")

    @router.get("/must-get")
    async def read_must_get() -> str:
        return context.must_get(context.CUSTOMER_ID)

    @router.get("/stream-boom")
    async def read_stream_boom() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first chunk\n"
            raise RuntimeError("failed after the response started")

        return StreamingResponse(chunks(), media_type="text/plain")

    @router.get("/stats")
    async def read_stats() -> dict[str, Any]:
        with open(f"/proc/{os.getpid()}/status") as status:
            rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return {
            "tasks": len(asyncio.all_tasks()),
            "rss_kb": rss_kb,
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}

    return kit.create_service_app(
        BoomSettings(), title="boom", lifespan=lifespan, routers=[router], internal=False
    )
