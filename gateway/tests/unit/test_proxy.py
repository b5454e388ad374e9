from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from gateway.headers import request_headers, response_headers
from gateway.main import create_app
from servicekit import verify_service_token
from servicekit.testing import lifespan_client

from .conftest import INVENTORY, ORDER, FakeUpstreams, make_settings

ORDER_BODY = b'{"items": [{"sku": "espresso-machine", "quantity": 1}]}'
#: Checkout needs an Idempotency-Key (the gateway answers 400 without one).
KEY = {"Idempotency-Key": "key-1"}


def assert_credential(request: httpx.Request, audience: str) -> None:
    """The upstream got a token signed with the service secret, minted for it by the gateway."""
    token = request.headers["x-service-token"]
    claims = verify_service_token(
        token, ["s3rvice-token-for-tests"], audience=audience, now=time.time()
    )
    assert claims.caller == "gateway"


def _problem(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["request_id"] and body["trace_id"]
    return body


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer ", "Bearer wrong-key", "Basic YWxpY2Uta2V5Og==", "alice-key"]
)
async def test_refuses_missing_or_unknown_key_with_401(
    client: httpx.AsyncClient, upstreams: FakeUpstreams, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    client.headers.pop("Authorization")
    response = await client.get("/api/products", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    _problem(response)
    assert upstreams.requests == []


async def test_unauthenticated_checkout_never_reaches_order(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    client.headers.pop("Authorization")
    response = await client.post("/api/orders", content=ORDER_BODY)
    assert response.status_code == 401
    assert upstreams.requests == []


async def test_sends_customer_from_key_and_service_token(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    await client.get("/api/products", headers={"Authorization": "Bearer bob-key"})
    assert upstreams.last.headers["x-customer-id"] == "customer-bob"
    assert_credential(upstreams.last, "inventory")


async def test_client_cannot_choose_customer_or_service_token(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    await client.get(
        "/api/orders/abc-123",
        headers={"X-Customer-ID": "customer-bob", "X-Service-Token": "forged"},
    )
    assert upstreams.last.headers.get_list("x-customer-id") == ["customer-alice"]
    assert len(upstreams.last.headers.get_list("x-service-token")) == 1
    assert_credential(upstreams.last, "order")


# --- request headers --------------------------------------------------------------------------


async def test_forwards_only_allow_listed_request_headers(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await client.post(
        "/api/orders",
        content=ORDER_BODY,
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": "key-1",
            "X-Request-ID": "req-123",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            "baggage": "tenant=a",
            "Cookie": "session=secret",
            "X-Forwarded-For": "10.0.0.1",
            "X-Internal-Debug": "1",
            "Proxy-Authorization": "Basic eA==",
            "TE": "trailers",
            "Upgrade": "websocket",
        },
    )
    sent = upstreams.last.headers
    assert sent["content-type"] == "application/json"
    assert sent["idempotency-key"] == "key-1"
    assert sent["x-request-id"] == "req-123"
    assert sent["traceparent"].startswith(f"00-{trace_id}-")
    assert sent["baggage"] == "tenant=a"
    for dropped in (
        "cookie",
        "authorization",
        "x-forwarded-for",
        "x-internal-debug",
        "proxy-authorization",
        "te",
        "upgrade",
        "x-shadow-traffic",
    ):
        assert dropped not in sent, dropped


def test_drops_headers_named_in_connection_even_if_allow_listed() -> None:
    selected = request_headers(
        [
            ("Connection", "close, Idempotency-Key"),
            ("Idempotency-Key", "k"),
            ("Content-Type", "application/json"),
        ]
    )
    assert selected == {"content-type": "application/json"}


def test_response_allow_list_drops_hop_by_hop_and_internal_headers() -> None:
    selected = response_headers(
        [
            ("Content-Type", "application/json"),
            ("Retry-After", "3"),
            ("X-Degraded", "cache"),
            ("Location", "/api/orders/1"),
            ("Transfer-Encoding", "chunked"),
            ("Keep-Alive", "5"),
            ("Connection", "keep-alive"),
            ("Set-Cookie", "a=b"),
            ("Server", "uvicorn"),
            ("Content-Encoding", "gzip"),
            ("X-Service-Token", "leak"),
        ]
    )
    assert selected == {
        "content-type": "application/json",
        "retry-after": "3",
        "x-degraded": "cache",
        "location": "/api/orders/1",
    }


# --- shadow traffic --------------------------------------------------------------------------


async def test_refuses_shadow_marker_from_key_without_loadtest_scope(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    response = await client.get("/api/products", headers={"X-Shadow-Traffic": "1"})
    assert response.status_code == 403
    assert _problem(response)["type"] == "/problems/shadow-traffic-forbidden"
    assert upstreams.requests == []


async def test_forwards_shadow_marker_from_loadtest_key(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    response = await client.get(
        "/api/products", headers={"Authorization": "Bearer lt-key", "X-Shadow-Traffic": "1"}
    )
    assert response.status_code == 200
    assert upstreams.last.headers["x-shadow-traffic"] == "1"
    assert upstreams.last.headers["x-customer-id"] == "customer-lt"


async def test_loadtest_key_without_marker_is_not_dyed(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    await client.get("/api/products", headers={"Authorization": "Bearer lt-key"})
    assert "x-shadow-traffic" not in upstreams.last.headers


# --- passthrough -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (201, b'{"id":"o-1","status":"confirmed"}', "application/json"),
        (402, b'{"type":"/problems/payment-declined","status":402}', "application/problem+json"),
        (409, b'{"type":"/problems/out-of-stock","status":409}', "application/problem+json"),
        (422, b'{"type":"/problems/idempotency-key-reused"}', "application/problem+json"),
    ],
)
async def test_copies_upstream_status_and_body_unchanged(
    client: httpx.AsyncClient,
    upstreams: FakeUpstreams,
    status: int,
    body: bytes,
    content_type: str,
) -> None:
    upstreams.handler = lambda request: httpx.Response(
        status,
        content=body,
        headers={"Content-Type": content_type, "Set-Cookie": "x=y", "X-Service-Token": "internal"},
    )
    response = await client.post(
        "/api/orders", content=ORDER_BODY, headers={"Idempotency-Key": "k"}
    )
    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-type"] == content_type
    assert "set-cookie" not in response.headers
    assert "x-service-token" not in response.headers


async def test_copies_retry_after_and_degraded_marker(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    upstreams.handler = lambda request: httpx.Response(
        200,
        json={"items": [], "next_cursor": None},
        headers={"Retry-After": "2", "X-Degraded": "cache", "Keep-Alive": "timeout=5"},
    )
    response = await client.get("/api/products")
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-degraded"] == "cache"
    assert "keep-alive" not in response.headers


async def test_forwards_order_body_bytes_unchanged(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    raw = b'{ "items" : [ {"sku":"mug","quantity":2} ] , "extra": 1 }'
    await client.post(
        "/api/orders", content=raw, headers={"Content-Type": "application/json", **KEY}
    )
    assert upstreams.last.method == "POST"
    assert upstreams.last.url.path == "/orders"
    assert upstreams.last.content == raw


async def test_echoes_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/products", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "host", "upstream_path"),
    [
        ("GET", "/api/products", INVENTORY, "/products"),
        ("GET", "/api/products/mug", INVENTORY, "/products/mug"),
        ("POST", "/api/orders", ORDER, "/orders"),
        (
            "GET",
            "/api/orders/0d5f3c1e-3b5a-4c43-9b1e-6d2f0f3f8a11",
            ORDER,
            "/orders/0d5f3c1e-3b5a-4c43-9b1e-6d2f0f3f8a11",
        ),
    ],
)
async def test_routes_each_path_to_its_configured_upstream(
    client: httpx.AsyncClient,
    upstreams: FakeUpstreams,
    method: str,
    path: str,
    host: str,
    upstream_path: str,
) -> None:
    body = ORDER_BODY if method == "POST" else None
    await client.request(method, path, content=body, headers=KEY)
    assert upstreams.last.method == method
    assert f"{upstreams.last.url.host}:{upstreams.last.url.port}" == host
    assert upstreams.last.url.path == upstream_path


async def test_passes_validated_pagination_through(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    await client.get("/api/products", params={"limit": 5, "cursor": "mug", "evil": "x"})
    assert dict(upstreams.last.url.params) == {"limit": "5", "cursor": "mug"}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "../admin"}])
async def test_refuses_out_of_bounds_pagination(
    client: httpx.AsyncClient, upstreams: FakeUpstreams, params: dict[str, str | int]
) -> None:
    response = await client.get("/api/products", params=params)
    assert response.status_code == 422
    _problem(response)
    assert upstreams.requests == []


@pytest.mark.parametrize(
    ("path", "headers", "forwarded"),
    [
        ("/api/products/http:%2F%2Fevil.example", {}, False),
        ("/api/products/..%2F..%2Fadmin", {}, False),
        ("/api/products/@evil.example", {}, False),
        ("/api/orders/%2F%2Fevil.example%2Fx", {}, False),
        ("/api/products", {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}, True),
        ("/api/products/mug", {"X-Upstream": "http://evil.example", "Forwarded": "host=e"}, True),
    ],
)
async def test_never_proxies_to_a_request_supplied_host(
    client: httpx.AsyncClient,
    upstreams: FakeUpstreams,
    path: str,
    headers: dict[str, str],
    forwarded: bool,
) -> None:
    response = await client.get(path, headers=headers)
    assert (response.status_code == 200) is forwarded
    assert bool(upstreams.requests) is forwarded
    for request in upstreams.requests:
        assert request.url.host == "inventory.internal"
        assert "evil" not in str(request.url)


# --- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_answers_503_with_retry_after_when_upstream_is_unreachable(
    client: httpx.AsyncClient, upstreams: FakeUpstreams, error: Exception
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    upstreams.handler = fail
    response = await client.post("/api/orders", content=ORDER_BODY, headers=KEY)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert _problem(response)["status"] == 503


async def test_refuses_body_over_the_cap_with_413(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    response = await client.post("/api/orders", content=b"x" * 4096)
    assert response.status_code == 413
    _problem(response)
    assert upstreams.requests == []


async def test_refuses_streamed_body_over_the_cap_with_413(
    client: httpx.AsyncClient, upstreams: FakeUpstreams
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * 512

    response = await client.post("/api/orders", content=chunks(), headers=KEY)
    assert response.status_code == 413
    assert upstreams.requests == []


# --- app ---------------------------------------------------------------------------------------


async def test_is_ready_without_any_database() -> None:
    app = create_app(make_settings(), transport=httpx.MockTransport(FakeUpstreams()))
    async with lifespan_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert json.loads(response.content)["checks"] == {}


async def test_documents_every_public_route_in_openapi() -> None:
    app = create_app(make_settings(), transport=httpx.MockTransport(FakeUpstreams()))
    async with lifespan_client(app) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths) == {
        "/api/products",
        "/api/products/{sku}",
        "/api/orders",
        "/api/orders/{order_id}",
        "/admin/faults/{service}",
        "/admin/read-only/{service}",
        "/admin/canary/{service}",
    }
    assert "requestBody" in paths["/api/orders"]["post"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
