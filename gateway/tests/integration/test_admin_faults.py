"""The admin fault API end to end, in process: gateway -> real payment and inventory apps.

Each service runs with its lifespan on a fresh PostgreSQL database; the gateway reaches them
through a transport that routes by host, so the signed service credential is checked for real.
"""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager
from gateway.config import GatewaySettings
from gateway.main import create_app
from payment.config import PaymentSettings
from payment.main import create_app as create_payment
from servicekit.testing import MakeDatabase, lifespan_client

from .conftest import ADMIN, SECRET, RouteByHost


async def test_faults_set_through_the_gateway_hit_the_service_and_clear(
    gateway: httpx.AsyncClient,
) -> None:
    products = {"Authorization": "Bearer alice-key"}
    # (No read before the fault: a product page read once may be served from inventory's
    # read cache, which faults do not reach.)
    put = await gateway.put("/admin/faults/inventory", headers=ADMIN, json={"error_rate": 1.0})
    assert put.status_code == 200
    assert put.json() == {"error_rate": 1.0, "latency_ms": 0, "hang": False}
    failed = await gateway.get("/api/products", headers=products)
    assert failed.status_code == 503
    assert failed.json()["type"] == "/problems/injected-fault"
    assert failed.headers["retry-after"] == "1"

    shown = await gateway.get("/admin/faults/inventory", headers=ADMIN)
    assert shown.json()["error_rate"] == 1.0
    assert (await gateway.get("/admin/faults/payment", headers=ADMIN)).json()["error_rate"] == 0

    cleared = await gateway.delete("/admin/faults/inventory", headers=ADMIN)
    assert cleared.json() == {"error_rate": 0.0, "latency_ms": 0, "hang": False}
    assert (await gateway.get("/api/products", headers=products)).status_code == 200


async def test_payment_faults_through_the_gateway(gateway: httpx.AsyncClient) -> None:
    put = await gateway.put(
        "/admin/faults/payment", headers=ADMIN, json={"latency_ms": 150, "error_rate": 0.25}
    )
    assert put.status_code == 200
    shown = (await gateway.get("/admin/faults/payment", headers=ADMIN)).json()
    assert shown == {"error_rate": 0.25, "latency_ms": 150, "hang": False}
    assert (await gateway.delete("/admin/faults/payment", headers=ADMIN)).status_code == 200


async def test_a_customer_key_cannot_reach_the_admin_api(gateway: httpx.AsyncClient) -> None:
    response = await gateway.put(
        "/admin/faults/payment",
        headers={"Authorization": "Bearer alice-key"},
        json={"hang": True},
    )
    assert response.status_code == 401
    shown = await gateway.get("/admin/faults/payment", headers=ADMIN)
    assert shown.json()["hang"] is False


async def test_a_wrong_service_secret_is_refused_by_the_service(
    make_database: MakeDatabase,
) -> None:
    payment = create_payment(
        PaymentSettings(
            _env_file=None,
            environment="test",
            service_token=SECRET,
            database_url=await make_database("postgresql", ["payment"]),
        )
    )
    async with LifespanManager(payment) as manager:
        settings = GatewaySettings(
            _env_file=None,
            environment="test",
            api_keys="alice-key:customer-alice",
            admin_token="admin-token-for-tests",
            service_token="some-other-secret",
            payment_url="http://payment.test",
        )
        transport = RouteByHost({"payment.test": httpx.ASGITransport(app=manager.app)})
        async with lifespan_client(create_app(settings, transport=transport)) as gateway:
            response = await gateway.put(
                "/admin/faults/payment", headers=ADMIN, json={"error_rate": 1.0}
            )
            assert response.status_code == 401  # relayed from payment: credential refused
            assert response.headers["content-type"] == "application/problem+json"
