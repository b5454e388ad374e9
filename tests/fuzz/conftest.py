"""Every app in-process for schemathesis, wired to each other as they run in production.

gateway -> order -> inventory + payment, each with its own migrated SQLite database (inventory
seeded with the catalog), every hop over `httpx.ASGITransport` with the real service credential.
A downstream's lifespan runs inside its caller's lifespan, so the whole chain lives on the loop
schemathesis drives the outermost app with, and stops with it.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from gateway.config import GatewaySettings
from gateway.main import create_app as create_gateway
from inventory.config import InventorySettings
from inventory.main import create_app as create_inventory
from order.config import OrderSettings
from order.main import create_app as create_order
from payment.config import PaymentSettings
from payment.main import create_app as create_payment
from servicekit import ServiceSettings, mint_service_token
from servicekit.data.migrations import upgrade
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.manifest import load

SECRET = "fuzz-service-secret"
API_KEY = "fuzz-key"
ADMIN_TOKEN = "fuzz-admin-token"
CUSTOMER = "customer-fuzz"


@dataclass
class Downstream:
    """An ASGI app called in-process whose lifespan is run by the app that calls it."""

    app: FastAPI
    running: ASGIApp | None = field(default=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # LifespanManager.app adds the lifespan state to every request scope.
        assert self.running is not None, "downstream called before its lifespan started"
        await self.running(scope, receive, send)

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self)


def run_downstreams(app: FastAPI, *downstreams: Downstream) -> FastAPI:
    """Start `downstreams` before `app`'s own lifespan and stop them after it."""
    own = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(outer: FastAPI) -> AsyncIterator[Any]:
        async with AsyncExitStack() as stack:
            for downstream in downstreams:
                manager = await stack.enter_async_context(
                    LifespanManager(downstream.app, startup_timeout=30, shutdown_timeout=30)
                )
                downstream.running = manager.app
            async with own(outer) as state:
                yield state

    app.router.lifespan_context = lifespan
    return app


def credential(audience: str) -> dict[str, str]:
    """Headers of a caller holding the service credential, acting for `CUSTOMER`."""
    token = mint_service_token(SECRET, caller="fuzz", audience=audience, ttl_seconds=3600)
    return {"X-Service-Token": token, "X-Customer-ID": CUSTOMER}


@dataclass
class Apps:
    """Factories of the four apps over fresh databases in `root`."""

    root: Path

    def _database(self, name: str) -> str:
        url = f"sqlite:///{self.root / name}.db"
        upgrade(url, name)
        seed = load().get(name).seed
        if seed:
            importlib.import_module(seed).main([url])  # as `make up` runs it
        return url

    def _common(self) -> dict[str, Any]:
        return {"environment": "test", "service_token": SECRET, "_env_file": None}

    def inventory(self) -> FastAPI:
        return create_inventory(
            InventorySettings(database_url=self._database("inventory"), **self._common())
        )

    def payment(self) -> FastAPI:
        return create_payment(
            PaymentSettings(database_url=self._database("payment"), **self._common())
        )

    def order(self) -> FastAPI:
        inventory, payment = Downstream(self.inventory()), Downstream(self.payment())
        settings = OrderSettings(
            database_url=self._database("order"),
            saga_recovery_interval_seconds=0,
            **self._common(),
        )
        app = create_order(
            settings,
            inventory_transport=inventory.transport(),
            payment_transport=payment.transport(),
        )
        return run_downstreams(app, inventory, payment)

    def app(self, name: str) -> FastAPI:
        """The app of the manifest's `name`: its own factory above, else `generated(name)`."""
        factory = getattr(self, name, None)
        return factory() if callable(factory) else self.generated(name)

    def generated(self, name: str) -> FastAPI:
        """A service in the shape `make new-service` generates, wired from the manifest.

        `<module>.main.create_app(settings, transport=...)` with its one `ServiceSettings`
        class from `<module>.config`; each downstream at `http://<name>.internal`.
        """
        service = load().get(name)
        config = importlib.import_module(f"{service.module}.config")
        (settings_class,) = {
            value
            for value in vars(config).values()
            if isinstance(value, type)
            and issubclass(value, ServiceSettings)
            and value is not ServiceSettings
        }
        fields: dict[str, Any] = {**self._common()}
        if service.database:
            fields["database_url"] = self._database(name)
        create_app = importlib.import_module(f"{service.module}.main").create_app
        if not service.downstreams:
            return create_app(settings_class(**fields))
        upstreams = {f"{d}.internal": Downstream(self.app(d)) for d in service.downstreams}
        fields |= {f"{d}_url": f"http://{d}.internal" for d in service.downstreams}
        app = create_app(
            settings_class(**fields), transport=_Routed(lambda r: upstreams[r.url.host])
        )
        return run_downstreams(app, *upstreams.values())

    def gateway(self) -> FastAPI:
        # Every service the manifest says the gateway calls, each at `http://<name>.internal`.
        names = load().gateway.downstreams
        upstreams = {f"{name}.internal": Downstream(self.app(name)) for name in names}
        settings = GatewaySettings(
            api_keys=f"{API_KEY}:{CUSTOMER}",
            admin_token=ADMIN_TOKEN,
            **{f"{name}_url": f"http://{name}.internal" for name in names},
            **self._common(),
        )
        app = create_gateway(settings, transport=_Routed(lambda r: upstreams[r.url.host]))
        return run_downstreams(app, *upstreams.values())


class _Routed(httpx.AsyncBaseTransport):
    """One transport for both gateway upstreams, chosen by host."""

    def __init__(self, route: Callable[[httpx.Request], Downstream]) -> None:
        self.route = route

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.route(request).transport().handle_async_request(request)


@pytest.fixture
def apps(tmp_path: Path) -> Apps:
    return Apps(tmp_path)
