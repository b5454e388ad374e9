"""App factory and lifespan: `python -m servicekit.serve gateway.main:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx
from fastapi import FastAPI
from servicekit import Downstreams, RoutingTable, ServiceClient, create_service_app
from starlette.middleware import Middleware

from gateway import admin, canary, ops
from gateway.access import AccessLimitMiddleware, AccessLimits, open_access_limits
from gateway.config import GatewaySettings
from gateway.keys import ApiKeyTrust, KeyTable
from gateway.public import public_router
from gateway.routes import router


class State(TypedDict):
    # No "database": the gateway stores nothing, so /readyz depends only on the process.
    settings: GatewaySettings
    keys: KeyTable
    inventory: ServiceClient
    order: ServiceClient
    payment: ServiceClient
    #: Canary routes of the upstreams (admin API `/admin/canary/{service}`).
    routing: RoutingTable
    #: {upstream service: its stable URL}: the services a canary route may name.
    upstreams: dict[str, str]
    access_limits: AccessLimits
    #: The generic public services (gateway.public), by name.
    public: dict[str, ServiceClient]
    # The limiter falls back to per-process counts when Redis fails, so the gateway stays
    # ready without it: None keeps the kit's /readyz from checking Redis.
    redis: None
    #: The ops page (gateway.ops); None when GATEWAY_OPS_ENABLED is false.
    ops: ops.OpsConsole | None


def create_app(
    settings: GatewaySettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the gateway app; settings come from `GATEWAY_*` when not given.

    `transport` replaces the network for both upstreams (tests pass an `httpx.MockTransport`).
    """
    settings = settings or GatewaySettings()
    # Built here, not in the lifespan: the edge asks it who every caller is.
    keys = KeyTable(settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        metrics = app.state.metrics
        # A breaker per upstream (GATEWAY_BREAKER_*). It opens on what says the upstream itself
        # is sick: transport errors, timeouts, 5xx. An upstream's deliberate 503/429 with
        # Retry-After (its own shedding, or order relaying a payment outage, which order's own
        # breaker handles) is relayed as is and not counted, so the gateway does not turn
        # partial shedding into a full outage.
        downstreams = Downstreams(settings, metrics=metrics, transport=transport)
        inventory = downstreams.client(
            "inventory", settings.inventory_url, backpressure_trips_breaker=False
        )
        order = downstreams.client(
            "order",
            settings.order_url,
            timeout=settings.order_timeout,
            backpressure_trips_breaker=False,
            # A checkout waits for order's own downstream calls: "slow" is the same share of
            # its longer budget as for the plain reads.
            slow_call_seconds=settings.breaker_slow_call_seconds
            * settings.order_timeout
            / settings.http_timeout,
        )
        # Only the admin fault API talks to payment.
        payment = downstreams.client("payment", settings.payment_url)
        public = {
            name: downstreams.client(name, url, backpressure_trips_breaker=False)
            for name, url in settings.public_urls.items()
        }
        await downstreams.start()
        console = (
            ops.ops_console(
                settings,
                registry=metrics.registry,
                routing=downstreams.routing,
                upstreams=downstreams.upstreams,
                transport=transport,
            )
            if settings.ops_enabled
            else None
        )
        try:
            async with open_access_limits(settings, metrics=app.state.metrics) as access_limits:
                yield {
                    "settings": settings,
                    "keys": keys,
                    "inventory": inventory,
                    "order": order,
                    "payment": payment,
                    "routing": downstreams.routing,
                    "upstreams": downstreams.upstreams,
                    "access_limits": access_limits,
                    "public": public,
                    "redis": None,
                    "ops": console,
                }
        finally:
            if console is not None:
                await console.collector.aclose()
            await downstreams.aclose()

    return create_service_app(
        settings,
        title="Gateway",
        lifespan=lifespan,
        routers=[
            router,
            public_router(settings.public_urls),
            admin.router,
            canary.router,
            *([ops.router] if settings.ops_enabled else []),
        ],
        internal=False,
        description="The public entry: API keys, access limits, routing to services.",
        middleware=[Middleware(AccessLimitMiddleware)],
        trust=ApiKeyTrust(keys, settings.admin_token.get_secret_value()),
    )
