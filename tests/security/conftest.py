"""Apps in-process for the OWASP API Top 10 matrix: the gateway over recorded fake upstreams,
the order service on SQLite over fake inventory and payment that speak their contracts, and
every service of the manifest built by its own factory (`service_app`).
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway.config import GatewaySettings
from gateway.main import create_app as create_gateway
from order.config import OrderSettings
from order.main import create_app as create_order
from servicekit import ServiceSettings, mint_service_token
from servicekit.data.migrations import upgrade
from servicekit.testing import lifespan_client

from infra.manifest import Service, load

SECRET = "security-service-secret"
ADMIN_TOKEN = "security-admin-token"
KEYS = "alice-key:customer-alice,bob-key:customer-bob"
#: The gateway's upstreams, one fake host per service it calls (`<name>.internal`).
HOSTS = {f"{name}.internal" for name in load().gateway.downstreams}
Handler = Callable[[httpx.Request], httpx.Response]


def order_json(order_id: str | None = None) -> dict[str, Any]:
    return {
        "id": order_id or str(uuid.uuid4()),
        "status": "confirmed",
        "items": [{"sku": "mug", "quantity": 1, "unit_price_cents": 100}],
        "total_cents": 100,
        "currency": "USD",
        "created_at": datetime.now(UTC).isoformat(),
    }


def contract_answer(request: httpx.Request) -> httpx.Response:
    """A valid answer of the upstream contracts, by path."""
    path = request.url.path
    if path.startswith("/products/"):
        sku = path.rsplit("/", 1)[1]
        return httpx.Response(
            200,
            json={"sku": sku, "name": "Mug", "price_cents": 100, "currency": "USD", "available": 3},
        )
    if path == "/products":
        return httpx.Response(200, json={"items": [], "next_cursor": None})
    if path == "/internal/faults":
        return httpx.Response(200, json={"error_rate": 0.0, "latency_ms": 0, "hang": False})
    if path.startswith("/orders"):
        return httpx.Response(201 if request.method == "POST" else 200, json=order_json())
    return httpx.Response(404, json={"type": "/problems/not-found"})


@dataclass
class Upstreams:
    """Every upstream of the gateway in one transport: records requests, answers `handler`."""

    requests: list[httpx.Request] = field(default_factory=list)
    handler: Handler = contract_answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)


def gateway_settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "api_keys": KEYS,
        "service_token": SECRET,
        "admin_token": ADMIN_TOKEN,
        **{f"{name}_url": f"http://{name}.internal" for name in load().gateway.downstreams},
        "max_body_bytes": 4096,
        "_env_file": None,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
def upstreams() -> Upstreams:
    return Upstreams()


@pytest.fixture
def make_gateway(upstreams: Upstreams) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        return create_gateway(
            gateway_settings(**overrides), transport=httpx.MockTransport(upstreams)
        )

    return make


@pytest.fixture
async def gateway(make_gateway: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(make_gateway()) as client:
        yield client


@dataclass
class FakeDownstreams:
    """Inventory and payment for the order service; `broken` makes one answer malformed bodies."""

    broken: str | None = None
    calls: list[str] = field(default_factory=list)
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def inventory(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"inventory {request.method} {request.url.path}")
        if self.broken == "inventory":
            # Valid JSON, wrong shape, and an id that would walk up the next call's URL path.
            return httpx.Response(201, json={"id": "../../admin", "status": "held"})
        if request.method == "GET":
            return httpx.Response(200, json={"items": list(self.reservations.values())})
        if request.url.path == "/reservations":
            body = json.loads(request.content)
            items = [{**item, "unit_price_cents": 100} for item in body["items"]]
            reservation = {
                "id": str(uuid.uuid4()),
                "order_id": body["order_id"],
                "status": "held",
                "items": items,
                "currency": "USD",
                "total_cents": sum(100 * item["quantity"] for item in items),
            }
            self.reservations[reservation["id"]] = reservation
            return httpx.Response(201, json=reservation)
        _, _, reservation_id, action = request.url.path.split("/")
        reservation = self.reservations[reservation_id]
        reservation["status"] = {"commit": "committed", "release": "released"}[action]
        return httpx.Response(200, json=reservation)

    def payment(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"payment {request.method} {request.url.path}")
        if self.broken == "payment":
            return httpx.Response(201, content=b"<html>upstream proxy error</html>")
        if request.method == "GET":
            return httpx.Response(200, json={"items": []})
        charge = {"id": str(uuid.uuid4()), **json.loads(request.content), "status": "succeeded"}
        return httpx.Response(201, json=charge)


def service_headers(audience: str, customer: str) -> dict[str, str]:
    token = mint_service_token(SECRET, caller="gateway", audience=audience, ttl_seconds=600)
    return {"X-Service-Token": token, "X-Customer-ID": customer}


@pytest.fixture
def downstreams() -> FakeDownstreams:
    return FakeDownstreams()


@pytest.fixture
def order_app(tmp_path: Path, downstreams: FakeDownstreams) -> FastAPI:
    url = f"sqlite:///{tmp_path / 'order.db'}"
    upgrade(url, "order")
    settings = OrderSettings(
        database_url=url,
        environment="test",
        service_token=SECRET,
        saga_recovery_interval_seconds=0,
        _env_file=None,
    )
    return create_order(
        settings,
        inventory_transport=httpx.MockTransport(downstreams.inventory),
        payment_transport=httpx.MockTransport(downstreams.payment),
    )


def settings_class(service: Service) -> type[ServiceSettings]:
    """The settings class in `<module>.config`: the one reading the service's env prefix."""
    config = importlib.import_module(f"{service.module}.config")
    found = [
        value
        for value in vars(config).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.model_config.get("env_prefix") == f"{service.prefix}_"
    ]
    assert len(found) == 1, (
        f"{service.module}.config: no single settings class for {service.prefix}_"
    )
    return found[0]


def service_app(service: Service) -> FastAPI:
    """`service` built by its own `create_app` over test settings (`gateway_settings` for the
    gateway), never started: enough to read its routes and OpenAPI document."""
    main = importlib.import_module(f"{service.module}.main")
    if service.gateway:
        settings: ServiceSettings = gateway_settings()
    else:
        values: dict[str, Any] = {"environment": "test", "service_token": SECRET}
        if service.database:
            values["database_url"] = "sqlite:///unused.db"
        settings = settings_class(service)(_env_file=None, **values)
    app: FastAPI = main.create_app(settings)
    return app
