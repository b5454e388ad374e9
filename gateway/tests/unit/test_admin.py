"""The admin fault API: admin token only, validated, forwarded with the service credential."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from gateway.main import create_app
from servicekit import verify_service_token
from servicekit.testing import lifespan_client

from .conftest import INVENTORY, FakeUpstreams, make_settings

PAYMENT = "payment.internal:9003"
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
FAULTS = {"error_rate": 0.5, "latency_ms": 200, "hang": False}


@pytest_asyncio.fixture
async def admin(upstreams: FakeUpstreams) -> AsyncIterator[httpx.AsyncClient]:
    upstreams.handler = lambda request: httpx.Response(
        200, json=json.loads(request.content) if request.content else FAULTS
    )
    settings = make_settings(payment_url=f"http://{PAYMENT}")
    app = create_app(settings, transport=httpx.MockTransport(upstreams))
    async with lifespan_client(app) as client:
        yield client


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", "Bearer wrong-token", "Bearer alice-key", "admin-token-for-tests"],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_refuses_anything_but_the_admin_token(
    admin: httpx.AsyncClient, upstreams: FakeUpstreams, authorization: str | None, method: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await admin.request(
        method, "/admin/faults/payment", headers=headers, json=FAULTS if method == "PUT" else None
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="admin"'
    assert response.json()["type"] == "/problems/admin-token-required"
    assert upstreams.requests == []


@pytest.mark.parametrize(("service", "host"), [("payment", PAYMENT), ("inventory", INVENTORY)])
async def test_put_forwards_the_validated_faults_with_the_service_credential(
    admin: httpx.AsyncClient, upstreams: FakeUpstreams, service: str, host: str
) -> None:
    response = await admin.put(f"/admin/faults/{service}", headers=ADMIN, json={"error_rate": 1.0})
    assert response.status_code == 200
    assert response.json() == {"error_rate": 1.0, "latency_ms": 0, "hang": False}
    sent = upstreams.last
    assert (sent.method, sent.url.host, sent.url.path) == (
        "PUT",
        host.split(":")[0],
        "/internal/faults",
    )
    assert json.loads(sent.content) == {"error_rate": 1.0, "latency_ms": 0, "hang": False}
    claims = verify_service_token(
        sent.headers["x-service-token"],
        ["s3rvice-token-for-tests"],
        audience=service,
        now=time.time(),
    )
    assert claims.caller == "gateway"
    assert "authorization" not in sent.headers, "the admin token never leaves the gateway"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_and_delete_are_forwarded(
    admin: httpx.AsyncClient, upstreams: FakeUpstreams, method: str
) -> None:
    response = await admin.request(method, "/admin/faults/inventory", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == FAULTS
    assert (upstreams.last.method, upstreams.last.url.path) == (method, "/internal/faults")


@pytest.mark.parametrize("service", ["order", "gateway", "..", "payment-canary"])
async def test_other_services_are_404_problems(
    admin: httpx.AsyncClient, upstreams: FakeUpstreams, service: str
) -> None:
    response = await admin.get(f"/admin/faults/{service}", headers=ADMIN)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert upstreams.requests == []


@pytest.mark.parametrize(
    "body",
    [{"error_rate": 2}, {"latency_ms": -1}, {"hang": "yes"}, {"error_rate": 0.1, "x": 1}],
)
async def test_bad_bodies_are_422_problems_and_never_forwarded(
    admin: httpx.AsyncClient, upstreams: FakeUpstreams, body: dict[str, object]
) -> None:
    response = await admin.put("/admin/faults/payment", headers=ADMIN, json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert upstreams.requests == []


async def test_service_errors_are_relayed(
    admin: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    upstreams.handler = lambda request: httpx.Response(
        401,
        json={"type": "/problems/unauthorized", "status": 401},
        headers={"content-type": "application/problem+json"},
    )
    response = await admin.get("/admin/faults/payment", headers=ADMIN)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_unreachable_service_is_a_503_problem(upstreams: FakeUpstreams) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = create_app(make_settings(), transport=httpx.MockTransport(refuse))
    async with lifespan_client(app) as client:
        response = await client.delete("/admin/faults/payment", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_admin_routes_are_documented_with_their_own_scheme(
    admin: httpx.AsyncClient,
) -> None:
    schema = (await admin.get("/openapi.json")).json()
    operations = schema["paths"]["/admin/faults/{service}"]
    assert set(operations) == {"get", "put", "delete"}
    assert operations["put"]["security"] == [{"AdminToken": []}]
    assert "AdminToken" in schema["components"]["securitySchemes"]
    assert schema["components"]["schemas"]["Faults"]["additionalProperties"] is False


def test_payment_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="payment_url"):
        make_settings(payment_url="file:///etc/passwd")
