"""App factory and lifespan: `uvicorn gateway.main:create_app --factory --port 8000`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx
from fastapi import FastAPI
from servicekit import ServiceClient, create_service_app

from gateway.config import GatewaySettings
from gateway.keys import KeyTable
from gateway.routes import router


class State(TypedDict):
    # No "database": the gateway stores nothing, so /readyz depends only on the process.
    settings: GatewaySettings
    keys: KeyTable
    inventory: ServiceClient
    order: ServiceClient


def create_app(
    settings: GatewaySettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the gateway app; settings come from `GATEWAY_*` when not given.

    `transport` replaces the network for both upstreams (tests pass an `httpx.MockTransport`).
    """
    settings = settings or GatewaySettings()
    token = settings.service_token.get_secret_value()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        inventory = ServiceClient(
            "inventory",
            settings.inventory_url,
            token=token,
            timeout=settings.http_timeout,
            transport=transport,
        )
        order = ServiceClient(
            "order",
            settings.order_url,
            token=token,
            timeout=settings.order_timeout,
            transport=transport,
        )
        try:
            yield {
                "settings": settings,
                "keys": KeyTable(settings.api_keys),
                "inventory": inventory,
                "order": order,
            }
        finally:
            await inventory.aclose()
            await order.aclose()

    return create_service_app(
        settings,
        title="Gateway",
        lifespan=lifespan,
        routers=[router],
        internal=False,
        description="The public entry: API keys, routing to services.",
    )
