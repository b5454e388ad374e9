"""The ops page in process: gateway -> real payment and inventory apps on PostgreSQL.

Who may see and steer: no session means the login form (401) and 401 on the data; an API key
or the admin token in a header is no session; an action without the CSRF token is 403 and
changes nothing; a logged-in operator's actions reach the services and are logged by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from gateway.config import GatewaySettings
from gateway.main import create_app
from inventory.config import InventorySettings
from inventory.main import create_app as create_inventory
from payment.config import PaymentSettings
from payment.main import create_app as create_payment
from servicekit.testing import MakeDatabase, lifespan_client

SECRET = "integration-service-secret"
TOKEN = "admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMER = {"Authorization": "Bearer alice-key"}


class RouteByHost(httpx.AsyncBaseTransport):
    """In-process apps by host; any other host refuses the connection, as a dead one would."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self.apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        app = self.apps.get(request.url.host)
        if app is None:
            raise httpx.ConnectError("connection refused", request=request)
        return await app.handle_async_request(request)


@pytest_asyncio.fixture
async def gateway(make_database: MakeDatabase) -> AsyncIterator[httpx.AsyncClient]:
    common = {"environment": "test", "service_token": SECRET}
    payment = create_payment(
        PaymentSettings(
            _env_file=None, database_url=await make_database("postgresql", ["payment"]), **common
        )
    )
    inventory = create_inventory(
        InventorySettings(
            _env_file=None,
            database_url=await make_database("postgresql", ["inventory"]),
            reservation_sweep_seconds=3600,
            **common,
        )
    )
    async with AsyncExitStack() as stack:
        routes = {}
        for host, app in (("payment.test", payment), ("inventory.test", inventory)):
            manager = await stack.enter_async_context(LifespanManager(app))
            routes[host] = httpx.ASGITransport(app=manager.app)
        settings = GatewaySettings(
            _env_file=None,
            api_keys="alice-key:customer-alice",
            admin_token=TOKEN,
            payment_url="http://payment.test",
            inventory_url="http://inventory.test",
            order_url="http://order.test",
            **common,
        )
        app = create_app(settings, transport=RouteByHost(routes))
        yield await stack.enter_async_context(lifespan_client(app))


async def log_in(gateway: httpx.AsyncClient) -> str:
    """Log in through the form; returns the page's CSRF token (the cookie stays in the client)."""
    answer = await gateway.post("/ops/login", data={"operator": "ada", "token": TOKEN})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ops"
    page = await gateway.get("/ops")
    assert page.status_code == 200
    found = re.search(r'name=csrf-token content="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def test_without_a_session_the_page_is_the_login_form_and_the_data_is_refused(
    gateway: httpx.AsyncClient,
) -> None:
    page = await gateway.get("/ops")
    assert page.status_code == 401
    assert '<form method=post action="/ops/login">' in page.text
    for headers in ({}, CUSTOMER, ADMIN):
        for path in ("/ops/data", "/ops/events"):
            refused = await gateway.get(path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.json()["type"] == "/problems/ops-session-required"
    # A customer's key with a forged cookie is no better.
    forged = {**CUSTOMER, "Cookie": "ops_session=e30.AAAA"}
    assert (await gateway.get("/ops/data", headers=forged)).status_code == 401


async def test_login_sets_a_strict_httponly_cookie_and_a_wrong_token_gets_none(
    gateway: httpx.AsyncClient,
) -> None:
    wrong = await gateway.post("/ops/login", data={"operator": "mallory", "token": "guess"})
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    right = await gateway.post("/ops/login", data={"operator": "ada", "token": TOKEN})
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("ops_session=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ops"):
        assert attribute.lower() in cookie.lower(), cookie
    assert TOKEN not in cookie and TOKEN not in right.headers["location"]


async def test_an_operator_sees_the_services_and_steers_them_with_the_csrf_token(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    csrf = await log_in(gateway)
    page = await gateway.get("/ops")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    data = (await gateway.get("/ops/data")).json()
    assert [s["name"] for s in data["services"]] == ["gateway", "order", "inventory", "payment"]

    fault = {"error_rate": 1.0, "latency_ms": 0, "hang": False}
    refused = await gateway.post("/ops/actions/faults/payment", json=fault)
    assert refused.status_code == 403
    assert refused.json()["type"] == "/problems/csrf-token-invalid"
    wrong = await gateway.post(
        "/ops/actions/faults/payment", json=fault, headers={"X-CSRF-Token": csrf[:-2] + "xx"}
    )
    assert wrong.status_code == 403
    assert (await gateway.get("/admin/faults/payment", headers=ADMIN)).json()["error_rate"] == 0

    with caplog.at_level(logging.INFO, logger="gateway.ops"):
        done = await gateway.post(
            "/ops/actions/faults/payment", json=fault, headers={"X-CSRF-Token": csrf}
        )
        assert done.status_code == 200
        assert (await gateway.get("/admin/faults/payment", headers=ADMIN)).json() == fault
        held = await gateway.post(
            "/ops/actions/read-only/inventory",
            json={"read_only": True},
            headers={"X-CSRF-Token": csrf},
        )
        assert held.json() == {"read_only": True, "forced": True}
        released = await gateway.post(
            "/ops/actions/read-only/inventory",
            json={"read_only": False},
            headers={"X-CSRF-Token": csrf},
        )
        assert released.json() == {"read_only": False, "forced": False}
        cleared = await gateway.post(
            "/ops/actions/faults/payment",
            json={"error_rate": 0.0},
            headers={"X-CSRF-Token": csrf},
        )
        assert cleared.json()["error_rate"] == 0
    actions = [r for r in caplog.records if getattr(r, "ops_action", None)]
    assert [(r.ops_service, r.operator) for r in actions] == [
        ("payment", "ada"),
        ("inventory", "ada"),
        ("inventory", "ada"),
        ("payment", "ada"),
    ]


async def test_a_bad_action_is_a_problem_not_a_change(gateway: httpx.AsyncClient) -> None:
    csrf = await log_in(gateway)
    headers = {"X-CSRF-Token": csrf}
    too_high = await gateway.post(
        "/ops/actions/faults/payment", json={"error_rate": 2}, headers=headers
    )
    assert too_high.status_code == 422
    unknown = await gateway.post("/ops/actions/faults/order", json={"hang": True}, headers=headers)
    assert unknown.status_code == 404
    assert "payment, inventory" in unknown.json()["detail"]
