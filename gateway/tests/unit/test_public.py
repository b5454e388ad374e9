"""The generic public route (gateway.public): `/api/<name>/...` to a configured upstream only."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from gateway.main import create_app
from servicekit import contract, verify_service_token
from servicekit.testing import lifespan_client

from .conftest import FakeUpstreams, make_settings

SHIPPING = "shipping.internal:9004"
PUBLIC = {"public_services": "shipping,order", "public_urls": {"shipping": f"http://{SHIPPING}"}}
KEY = {"Idempotency-Key": "key-1"}


@pytest_asyncio.fixture
async def client(upstreams: FakeUpstreams) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(**PUBLIC), transport=httpx.MockTransport(upstreams))
    async with lifespan_client(app, headers={"Authorization": "Bearer alice-key"}) as c:
        yield c


async def test_forwards_to_the_configured_upstream_as_the_customer(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    upstreams.handler = lambda _: httpx.Response(
        200, json={"id": "a1"}, headers={"x-internal-secret": "s", "retry-after": "3"}
    )
    response = await client.get("/api/shipping/items/a1?expand=all&expand=more")
    assert response.status_code == 200 and response.json() == {"id": "a1"}
    assert "x-internal-secret" not in response.headers
    assert response.headers["retry-after"] == "3"
    sent = upstreams.last
    assert (sent.url.host, sent.url.port, sent.url.path) == ("shipping.internal", 9004, "/items/a1")
    assert sent.url.params.get_list("expand") == ["all", "more"]
    assert sent.headers[contract.CUSTOMER.header] == "customer-alice"
    claims = verify_service_token(
        sent.headers[contract.SERVICE_TOKEN.header],
        ["s3rvice-token-for-tests"],
        audience="shipping",
        now=time.time(),
    )
    assert claims.caller == "gateway"
    assert "authorization" not in sent.headers


async def test_post_relays_body_and_idempotency_key(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    upstreams.handler = lambda _: httpx.Response(201, json={"id": "a1"})
    response = await client.post("/api/shipping/items", json={"name": "x"}, headers=KEY)
    assert response.status_code == 201
    sent = upstreams.last
    assert (sent.method, sent.url.path, sent.content) == ("POST", "/items", b'{"name":"x"}')
    assert sent.headers[contract.IDEMPOTENCY_KEY.header] == "key-1"


async def test_body_over_the_cap_is_413_and_never_forwarded(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    response = await client.post("/api/shipping/items", content=b"{" + b" " * 4096 + b"}")
    assert response.status_code == 413
    assert upstreams.requests == []


async def test_without_an_api_key_nothing_is_forwarded(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    client.headers.pop("Authorization")
    assert (await client.get("/api/shipping/items/a1")).status_code == 401
    assert (await client.post("/api/shipping/items", json={})).status_code == 401
    assert upstreams.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/shipping/healthz",
        "/api/shipping/metrics",
        "/api/shipping/internal/faults",
        "/api/shipping/items/a1/refund",  # deeper than an item: no route
        "/api/ledger/items",  # not configured
        "/api/order/reservations",  # fronted by dedicated routes only
        "/api/payment/charges",
    ],
)
async def test_closed_unknown_and_dedicated_paths_are_404_and_never_forwarded(
    client: httpx.AsyncClient, upstreams: FakeUpstreams, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert upstreams.requests == []


async def test_bad_segments_are_422(client: httpx.AsyncClient, upstreams: FakeUpstreams) -> None:
    for path in (
        "/api/shipping/Items",
        "/api/shipping/items/a%20b",
        "/api/shipping/%2E%2E/admin",
    ):
        assert (await client.get(path)).status_code == 422, path
    assert upstreams.requests == []


async def test_hand_written_routes_are_unchanged(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    await client.get("/api/products/mug")
    assert upstreams.last.url.host == "inventory.internal"
    assert (await client.post("/api/products/mug")).status_code == 405


def test_every_forwarded_route_is_documented() -> None:
    paths = create_app(make_settings(**PUBLIC)).openapi()["paths"]
    assert set(paths["/api/shipping/{collection}"]) == {"get", "post"}
    assert set(paths["/api/shipping/{collection}/{item_id}"]) == {"get", "put", "patch", "delete"}
    assert not [p for p in paths if p.startswith("/api/order/")]
    assert not [p for p in create_app(make_settings()).openapi()["paths"] if "{collection}" in p]


def test_upstream_comes_from_its_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SHIPPING_URL", "http://shipping:8004/")
    assert make_settings(public_services="shipping").public_urls == {
        "shipping": "http://shipping:8004"
    }


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ("shipping", "set GATEWAY_SHIPPING_URL"),
        ("products", "would shadow /api/products"),
        ("Shipping", "not a service name"),
    ],
)
def test_bad_public_settings_are_refused(
    services: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_SHIPPING_URL", raising=False)
    with pytest.raises(ValueError, match=message):
        make_settings(public_services=services)


def test_an_upstream_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        make_settings(public_services="shipping", public_urls={"shipping": "file:///etc"})
