"""OWASP API Security Top 10 (2023): at least one test per risk, against the apps in-process.

Test names start with the risk id, so `pytest tests/security -k api4` runs one row of the table.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from gateway.config import GatewaySettings
from gateway.main import create_app as create_gateway
from inventory.config import InventorySettings
from payment.config import PaymentSettings
from payment.main import create_app as create_payment
from servicekit import mint_service_token
from servicekit.data.migrations import upgrade
from servicekit.serve import ServerSettings, build_config
from servicekit.testing import lifespan_client

from infra.manifest import load

from .conftest import (
    ADMIN_TOKEN,
    HOSTS,
    SECRET,
    FakeDownstreams,
    Upstreams,
    gateway_settings,
    service_app,
    service_headers,
)

ROOT = Path(__file__).resolve().parents[2]
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
ORDER = {"items": [{"sku": "mug-stoneware-350ml", "quantity": 1}]}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["request_id"] and body["trace_id"]
    return body


async def place(client: httpx.AsyncClient, customer: str, key: str) -> httpx.Response:
    headers = {**service_headers("order", customer), "Idempotency-Key": key}
    return await client.post("/orders", json=ORDER, headers=headers)


# --- API1 Broken Object Level Authorization -----------------------------------------------------


async def test_api1_another_customers_order_is_404(order_app: FastAPI) -> None:
    async with lifespan_client(order_app) as client:
        created = await place(client, "customer-alice", "k-1")
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        own = await client.get(
            f"/orders/{order_id}", headers=service_headers("order", "customer-alice")
        )
        other = await client.get(
            f"/orders/{order_id}", headers=service_headers("order", "customer-bob")
        )
    assert own.status_code == 200
    body = assert_problem(other, 404)
    # Same answer as for an id that does not exist: nothing tells Bob the order is real.
    assert body["type"] == "/problems/order-not-found"


async def test_api1_gateway_sets_the_customer_from_the_key_only(
    gateway: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    await gateway.get(
        "/api/orders/0b0e1c4e-1111-4a4a-8888-000000000001",
        headers={**BOB, "X-Customer-ID": "customer-alice"},
    )
    assert upstreams.requests[-1].headers.get_list("x-customer-id") == ["customer-bob"]


# --- API2 Broken Authentication -----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", "Bearer not-a-key", "Basic YWxpY2Uta2V5Og==", "alice-key"],
    ids=["missing", "empty", "unknown", "wrong-scheme", "no-scheme"],
)
async def test_api2_missing_or_invalid_api_key_is_401(
    gateway: httpx.AsyncClient, upstreams: Upstreams, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await gateway.get("/api/products", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert upstreams.requests == []


async def test_api2_revoked_api_key_is_401(make_gateway: Callable[..., FastAPI]) -> None:
    async with lifespan_client(make_gateway()) as before:
        assert (await before.get("/api/products", headers=BOB)).status_code == 200
    # Revoking a key is removing it from GATEWAY_API_KEYS (and restarting).
    async with lifespan_client(make_gateway(api_keys="alice-key:customer-alice")) as after:
        assert_problem(await after.get("/api/products", headers=BOB), 401)
        assert (await after.get("/api/products", headers=ALICE)).status_code == 200


async def _payment(tmp_path: Path, **overrides: Any) -> FastAPI:
    url = f"sqlite:///{tmp_path / 'payment.db'}"
    await asyncio.to_thread(upgrade, url, "payment")
    values: dict[str, Any] = {"database_url": url, "environment": "test", "service_token": SECRET}
    return create_payment(PaymentSettings(_env_file=None, **(values | overrides)))


async def test_api2_service_credential_missing_invalid_expired_is_401_other_audience_403(
    tmp_path: Path,
) -> None:
    now = time.time()
    cases = {
        "missing": (None, 401, "service-credential-missing"),
        "raw secret": (SECRET, 401, "service-credential-invalid"),
        "forged": (
            mint_service_token("not-the-secret", caller="gateway", audience="payment"),
            401,
            "service-credential-invalid",
        ),
        "expired": (
            mint_service_token(SECRET, caller="order", audience="payment", now=now - 3600),
            401,
            "service-credential-expired",
        ),
        "other service": (
            mint_service_token(SECRET, caller="order", audience="inventory"),
            403,
            "service-credential-audience",
        ),
    }
    async with lifespan_client(await _payment(tmp_path)) as client:
        for name, (token, status, slug) in cases.items():
            headers = {"X-Service-Token": token} if token else {}
            response = await client.get("/charges", params={"order_id": "0" * 32}, headers=headers)
            body = assert_problem(response, status)
            assert body["type"] == f"/problems/{slug}", name
        good = mint_service_token(SECRET, caller="order", audience="payment")
        ok = await client.get(
            "/charges", params={"order_id": "0" * 32}, headers={"X-Service-Token": good}
        )
    assert ok.status_code == 200, ok.text


async def test_api2_rotation_accepts_current_and_previous_secret_only(tmp_path: Path) -> None:
    app = await _payment(tmp_path, service_token="new-secret-value", service_token_previous=SECRET)
    params = {"order_id": "0" * 32}

    def token(secret: str) -> dict[str, str]:
        return {"X-Service-Token": mint_service_token(secret, caller="order", audience="payment")}

    async with lifespan_client(app) as client:
        assert (await client.get("/charges", params=params, headers=token(SECRET))).is_success
        new = await client.get("/charges", params=params, headers=token("new-secret-value"))
        assert new.is_success
        assert_problem(await client.get("/charges", params=params, headers=token("x" * 20)), 401)


# --- API3 Broken Object Property Level Authorization -------------------------------------------


async def test_api3_unknown_fields_are_rejected(
    order_app: FastAPI, downstreams: FakeDownstreams
) -> None:
    hostile = {**ORDER, "customer_id": "customer-bob", "status": "confirmed", "total_cents": 0}
    headers = {**service_headers("order", "customer-alice"), "Idempotency-Key": "k-2"}
    async with lifespan_client(order_app) as client:
        response = await client.post("/orders", json=hostile, headers=headers)
    body = assert_problem(response, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "customer_id")}
    assert downstreams.calls == []


async def test_api3_responses_expose_no_internal_fields(order_app: FastAPI) -> None:
    public = {"id", "status", "items", "total_cents", "currency", "created_at"}
    async with lifespan_client(order_app) as client:
        created = await place(client, "customer-alice", "k-3")
        read = await client.get(
            f"/orders/{created.json()['id']}", headers=service_headers("order", "customer-alice")
        )
    for response in (created, read):
        body = response.json()
        # No saga state, reservation or charge ids, customer id or failure reason.
        assert set(body) == public
        assert set(body["items"][0]) == {"sku", "quantity", "unit_price_cents"}


# --- API4 Unrestricted Resource Consumption -----------------------------------------------------


async def test_api4_body_over_the_cap_is_413_and_never_forwarded(
    gateway: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    big = b'{"items": [' + b'{"sku": "a", "quantity": 1},' * 400 + b"]}"
    response = await gateway.post(
        "/api/orders", content=big, headers={**ALICE, "Idempotency-Key": "k"}
    )
    assert_problem(response, 413)
    assert upstreams.requests == []


@pytest.mark.parametrize(
    ("params", "status"), [({"limit": 101}, 422), ({"limit": 0}, 422), ({"limit": 100}, 200)]
)
async def test_api4_page_size_is_bounded(
    gateway: httpx.AsyncClient, params: dict[str, int], status: int
) -> None:
    response = await gateway.get("/api/products", params=params, headers=ALICE)
    assert response.status_code == status


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "bad\x7fkey", "ключ"], ids=["empty", "256-chars", "control", "non-ascii"]
)
async def test_api4_idempotency_key_is_capped(
    gateway: httpx.AsyncClient, upstreams: Upstreams, key: str
) -> None:
    headers = [(b"Authorization", b"Bearer alice-key"), (b"Idempotency-Key", key.encode())]
    response = await gateway.post("/api/orders", json=ORDER, headers=headers)
    assert_problem(response, 400)
    assert upstreams.requests == []


async def test_api4_oversized_headers_are_not_carried(
    gateway: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    response = await gateway.get(
        "/api/products", headers={**ALICE, "X-Request-ID": "r" * 129, "baggage": "b=" + "x" * 9000}
    )
    assert response.status_code == 200
    forwarded = upstreams.requests[-1].headers
    assert forwarded["x-request-id"] != "r" * 129 and len(forwarded["x-request-id"]) <= 128
    assert "baggage" not in forwarded


async def test_api4_upstream_timeout_is_a_fast_503(
    make_gateway: Callable[..., FastAPI], upstreams: Upstreams
) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("upstream did not answer in time", request=request)

    upstreams.handler = hang
    async with lifespan_client(make_gateway(http_timeout=0.5)) as client:
        response = await client.get("/api/products", headers=ALICE)
    assert_problem(response, 503)
    assert response.headers["retry-after"]


# --- API5 Broken Function Level Authorization ---------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer alice-key", "Bearer wrong-admin-token", f"Basic {ADMIN_TOKEN}"],
    ids=["none", "customer-key", "wrong-token", "wrong-scheme"],
)
async def test_api5_admin_routes_need_the_admin_token(
    gateway: httpx.AsyncClient, upstreams: Upstreams, method: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"error_rate": 0.5, "latency_ms": 0, "hang": False} if method == "PUT" else None
    response = await gateway.request(method, "/admin/faults/payment", json=body, headers=headers)
    assert response.status_code in (401, 403), response.text
    assert upstreams.requests == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_api5_admin_token_reaches_the_fault_api(
    gateway: httpx.AsyncClient, upstreams: Upstreams, method: str
) -> None:
    body = {"error_rate": 0.5, "latency_ms": 0, "hang": False} if method == "PUT" else None
    response = await gateway.request(
        method,
        "/admin/faults/payment",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.is_success, response.text
    assert upstreams.requests[-1].url.host == "payment.internal"


# --- API6 Unrestricted Access to Sensitive Business Flows ---------------------------------------


async def test_api6_checkout_attempts_per_customer_are_limited(
    make_gateway: Callable[..., FastAPI], upstreams: Upstreams
) -> None:
    app = make_gateway(checkout_rate_limit="2/minute")
    async with lifespan_client(app) as client:
        answers = [
            await client.post(
                "/api/orders", json=ORDER, headers={**ALICE, "Idempotency-Key": f"k-{i}"}
            )
            for i in range(3)
        ]
        bob = await client.post("/api/orders", json=ORDER, headers={**BOB, "Idempotency-Key": "b"})
    assert [a.status_code for a in answers[:2]] == [201, 201]
    assert_problem(answers[2], 429)
    assert answers[2].headers["retry-after"]
    assert bob.status_code == 201
    assert len([r for r in upstreams.requests if r.url.path == "/orders"]) == 3


# --- API7 Server Side Request Forgery -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/products/..%2F..%2Fadmin",
        "/api/products/%2e%2e",
        "/api/products/..%2Finternal%2Ffaults",
        "/api/products/http:%2F%2Fevil.example%2F",
        "/api/orders/..%2F..%2Fcharges",
        "/api/products?cursor=../../internal",
        "/api/products/%00",
    ],
)
async def test_api7_gateway_reaches_only_its_configured_upstreams(
    gateway: httpx.AsyncClient, upstreams: Upstreams, path: str
) -> None:
    response = await gateway.get(path, headers={**ALICE, "Host": "evil.example"})
    assert response.status_code in (404, 422), response.text
    for request in upstreams.requests:
        assert request.url.host in HOSTS
        assert ".." not in request.url.path and "//" not in request.url.path


async def test_api7_upstream_hosts_come_only_from_settings(
    gateway: httpx.AsyncClient, upstreams: Upstreams
) -> None:
    await gateway.get(
        "/api/products/mug",
        headers={**ALICE, "Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert [r.url.host for r in upstreams.requests] == ["inventory.internal"]
    assert upstreams.requests[0].url.path == "/products/mug"


# --- API8 Security Misconfiguration -------------------------------------------------------------


async def test_api8_security_headers_on_every_answer(gateway: httpx.AsyncClient) -> None:
    answers = [
        await gateway.get("/api/products", headers=ALICE),  # 200
        await gateway.get("/api/products"),  # 401
        await gateway.get("/nowhere", headers=ALICE),  # 404
        await gateway.get("/api/products", params={"limit": 0}, headers=ALICE),  # 422
        await gateway.get("/healthz"),
    ]
    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "server" not in response.headers and "x-powered-by" not in response.headers


def test_api8_no_server_banner_in_the_stack_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STACK_RUN_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "infra/local"))
    spec = importlib.util.spec_from_file_location("stack_under_test", ROOT / "infra/local/stack.py")
    assert spec is not None and spec.loader is not None
    stack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "stack_under_test", stack)  # dataclasses look it up
    spec.loader.exec_module(stack)
    commands: list[list[str]] = []

    class Recorder:
        pid = 4242

        def __init__(self, command: list[str], **_: Any) -> None:
            commands.append(command)

    monkeypatch.setattr(subprocess, "Popen", Recorder)
    stack.LOGS.mkdir(parents=True)
    stack.PIDS.mkdir(parents=True)
    services = stack.services()
    for service in services:
        stack.start(service, {})
    assert len(commands) == len(load()) == len(services)
    # Every service runs under servicekit.serve, which never sends uvicorn's Server header.
    assert all(command[1:3] == ["-m", "servicekit.serve"] for command in commands)
    settings = ServerSettings(_env_prefix="API8_TEST_")
    assert build_config("gateway.main:create_app", settings, fd_limit=1024).server_header is False


async def test_api8_docs_and_schema_off_in_production(tmp_path: Path) -> None:
    settings = gateway_settings(
        environment="production",
        api_keys="prod-key-0123456789:customer-1",
        service_token="a-real-service-secret-0123456789",
        admin_token="a-real-admin-token-0123456789",
    )
    async with lifespan_client(create_gateway(settings)) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert_problem(await client.get(path), 404)


def test_api8_placeholder_secrets_are_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        GatewaySettings(environment="production", api_keys="k-0123456789:c", _env_file=None)
    with pytest.raises(ValueError, match="placeholder"):
        InventorySettings(
            environment="staging",
            service_token="a-real-secret-0123456789",
            service_token_previous="dev-service-token",
            _env_file=None,
        )


def test_api8_env_file_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False, capture_output=True
    )
    assert ignored.returncode == 0


async def test_api8_cors_is_closed_by_default(gateway: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = await gateway.options(
        "/api/orders",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    simple = await gateway.get("/api/products", headers={**ALICE, **origin})
    for response in (preflight, simple):
        assert not any(h.startswith("access-control-") for h in response.headers)
    assert preflight.status_code == 405


# --- API9 Improper Inventory Management ---------------------------------------------------------

#: Answered on every app without being in its OpenAPI: probes, metrics, docs.
UNDOCUMENTED_OK = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/openapi.json",
}


def _is_ops_page(path: str) -> bool:
    """The gateway's ops page (gateway.ops): HTML behind a login session, not the API."""
    return path == "/ops" or path.startswith("/ops/")


def _apps() -> dict[str, FastAPI]:
    """Every service of the manifest, built by its own factory over throwaway settings."""
    return {service.name: service_app(service) for service in load()}


def test_api9_every_route_is_documented() -> None:
    for name, app in _apps().items():
        documented = set(app.openapi()["paths"])
        routes = {r.path for r in iter_route_contexts(app.routes) if r.path} | {"/openapi.json"}
        undocumented = {r for r in routes - documented if not _is_ops_page(r)}
        assert undocumented <= UNDOCUMENTED_OK, name
        # And everything documented is a real route.
        assert documented <= routes, name


@pytest.mark.parametrize(
    "path",
    ["/admin", "/debug", "/internal/faults", "/.env", "/server-status", "/api", "/api/v2/products"],
)
async def test_api9_nothing_else_answers(gateway: httpx.AsyncClient, path: str) -> None:
    assert_problem(await gateway.get(path, headers=ALICE), 404)


# --- API10 Unsafe Consumption of APIs -----------------------------------------------------------


@pytest.mark.parametrize("broken", ["inventory", "payment"])
async def test_api10_malformed_downstream_answer_is_503_and_never_used(
    order_app: FastAPI, downstreams: FakeDownstreams, broken: str
) -> None:
    downstreams.broken = broken
    async with lifespan_client(order_app) as client:
        response = await place(client, "customer-alice", f"k-{broken}")
    body = assert_problem(response, 503)
    assert response.headers["retry-after"]
    assert "Traceback" not in body["detail"]
    # The malformed reservation id was never used to build a URL path.
    assert not any("/admin" in call for call in downstreams.calls)
    if broken == "payment":
        # A charge that cannot be read is not trusted: the stock is given back.
        assert "released" in [r["status"] for r in downstreams.reservations.values()]
