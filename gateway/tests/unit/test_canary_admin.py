"""The canary admin API: admin token only, validated (422), persisted, followed by the proxy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from gateway.main import create_app
from servicekit import contract
from servicekit.testing import lifespan_client

from .conftest import FakeUpstreams, make_settings

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
CANARY = "http://127.0.0.1:18002"
ROUTE = {"upstream": CANARY, "weight": 2.5, "version": "0.2.0", "step": "1/5"}


@pytest_asyncio.fixture
async def gateway(upstreams: FakeUpstreams, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        routing_file=str(tmp_path / "routing.json"), routing_allowed_hosts="canary.internal"
    )
    app = create_app(settings, transport=httpx.MockTransport(upstreams))
    async with lifespan_client(app) as client:
        yield client


@pytest.mark.parametrize("authorization", [None, "Bearer alice-key", "Bearer wrong"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_refuses_anything_but_the_admin_token(
    gateway: httpx.AsyncClient, authorization: str | None, method: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await gateway.request(
        method, "/admin/canary/inventory", headers=headers, json=ROUTE if method == "PUT" else None
    )
    assert response.status_code == 401
    assert response.json()["type"] == "/problems/admin-token-required"


async def test_sets_reads_and_removes_a_route_and_persists_it(
    gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    empty = await gateway.get("/admin/canary/inventory", headers=ADMIN)
    assert empty.status_code == 200
    assert empty.json() == {
        "service": "inventory",
        "stable": "http://inventory.internal:9002",
        "upstream": None,
        "weight": 0.0,
        "version": None,
        "step": None,
    }
    put = await gateway.put("/admin/canary/inventory", headers=ADMIN, json=ROUTE)
    assert put.status_code == 200, put.text
    assert put.json() == {
        **ROUTE,
        "service": "inventory",
        "stable": "http://inventory.internal:9002",
    }
    assert (await gateway.get("/admin/canary/inventory", headers=ADMIN)).json() == put.json()
    stored = json.loads((tmp_path / "routing.json").read_text())
    assert stored == {"routes": {"inventory": ROUTE}}
    deleted = await gateway.delete("/admin/canary/inventory", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["upstream"] is None
    assert json.loads((tmp_path / "routing.json").read_text()) == {"routes": {}}


@pytest.mark.parametrize(
    ("service", "body", "detail"),
    [
        ("inventory", {**ROUTE, "weight": 100.5}, "less than or equal to 100"),
        ("inventory", {**ROUTE, "weight": -1}, "greater than or equal to 0"),
        ("inventory", {**ROUTE, "weight": "lots"}, "valid number"),
        ("inventory", {**ROUTE, "upstream": "http://169.254.169.254:80"}, "not allowed"),
        ("inventory", {**ROUTE, "upstream": "http://127.0.0.1"}, "port"),
        ("inventory", {**ROUTE, "upstream": "http://inventory.internal:9002"}, "not allowed"),
        ("inventory", {**ROUTE, "surprise": 1}, "Extra inputs"),
        ("warehouse", ROUTE, "no upstream 'warehouse'"),
    ],
)
async def test_bad_input_is_a_422_problem_and_changes_nothing(
    gateway: httpx.AsyncClient, tmp_path: Path, service: str, body: object, detail: str
) -> None:
    response = await gateway.put(f"/admin/canary/{service}", headers=ADMIN, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.text
    assert not (tmp_path / "routing.json").exists()


async def test_an_allow_listed_host_is_accepted(gateway: httpx.AsyncClient) -> None:
    body = {**ROUTE, "upstream": "http://canary.internal:9102"}
    assert (await gateway.put("/admin/canary/order", headers=ADMIN, json=body)).status_code == 200


async def test_the_proxy_follows_the_route_and_honours_the_pin_from_trusted_callers(
    gateway: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    body = {**ROUTE, "upstream": "http://canary.internal:9102", "weight": 0}
    assert (await gateway.put("/admin/canary/inventory", headers=ADMIN, json=body)).is_success
    pin = {contract.CANARY_ROUTE.name: "canary"}
    await gateway.get("/api/products", headers={"Authorization": "Bearer alice-key"})
    assert upstreams.last.url.host == "inventory.internal"
    # An ordinary key may not pin: the header is dropped, the weight (0) decides.
    await gateway.get("/api/products", headers={"Authorization": "Bearer alice-key", **pin})
    assert upstreams.last.url.host == "inventory.internal"
    assert contract.CANARY_ROUTE.name not in upstreams.last.headers
    # A load-test key may; the pin travels on to the next hop.
    await gateway.get("/api/products", headers={"Authorization": "Bearer lt-key", **pin})
    assert upstreams.last.url.host == "canary.internal"
    assert upstreams.last.headers[contract.CANARY_ROUTE.name] == "canary"
    body["weight"] = 100
    assert (await gateway.put("/admin/canary/inventory", headers=ADMIN, json=body)).is_success
    await gateway.get("/api/products", headers={"Authorization": "Bearer alice-key"})
    assert upstreams.last.url.host == "canary.internal"
