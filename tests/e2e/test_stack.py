"""The public contract of ARCHITECTURE.md, driven over HTTP against the running stack.

Tests share one stack per mode, so each one orders a product no other test touches.
The last test stops the stack (pytest keeps file order within a fixture parameter).
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from infra.manifest import load

from .conftest import Stack

#: The development service credential (`*_SERVICE_TOKEN` default), used to inspect payment.
TOKEN = "dev-service-token"


def order(
    client: httpx.Client, items: list[dict[str, Any]], key: str | None = None, **headers: str
) -> httpx.Response:
    sent = {"Idempotency-Key": key or secrets.token_hex(16), **headers}
    return client.post("/api/orders", json={"items": items}, headers=sent)


def available(client: httpx.Client, sku: str) -> int:
    response = client.get(f"/api/products/{sku}")
    assert response.status_code == 200, response.text
    count: int = response.json()["available"]
    return count


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for name in ("type", "title", "detail", "request_id", "trace_id"):
        assert body.get(name), f"problem body without {name}: {body}"
    return body


def test_lists_products_page_by_page(stack: Stack) -> None:
    with stack.client() as client:
        first = client.get("/api/products", params={"limit": 5})
        assert first.status_code == 200, first.text
        page = first.json()
        assert len(page["items"]) == 5 and page["next_cursor"]
        skus = [p["sku"] for p in page["items"]]
        while page["next_cursor"]:
            response = client.get(
                "/api/products", params={"limit": 5, "cursor": page["next_cursor"]}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            skus += [p["sku"] for p in page["items"]]
        assert skus == sorted(set(skus)) and len(skus) >= 20
        product = first.json()["items"][0]
        assert set(product) == {"sku", "name", "price_cents", "currency", "available"}
        assert_problem(client.get("/api/products", params={"limit": 101}), 422)
        assert_problem(client.get("/api/products", params={"limit": 0}), 422)


def test_checkout_confirms_and_replays_the_identical_response(stack: Stack) -> None:
    with stack.client() as client:
        price = client.get("/api/products/mug-stoneware-350ml").json()["price_cents"]
        key = secrets.token_hex(16)
        items = [{"sku": "mug-stoneware-350ml", "quantity": 2}]
        created = order(client, items, key)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] == "confirmed"
        assert body["total_cents"] == 2 * price and body["currency"] == "USD"
        assert body["items"] == [
            {"sku": "mug-stoneware-350ml", "quantity": 2, "unit_price_cents": price}
        ]
        replay = order(client, items, key)
        assert replay.status_code == 201
        assert replay.content == created.content
        read = client.get(f"/api/orders/{body['id']}")
        assert read.status_code == 200 and read.json()["id"] == body["id"]


def test_same_key_with_a_different_body_is_422(stack: Stack) -> None:
    with stack.client() as client:
        key = secrets.token_hex(16)
        assert order(client, [{"sku": "tea-sencha-100g", "quantity": 1}], key).status_code == 201
        assert_problem(order(client, [{"sku": "tea-sencha-100g", "quantity": 2}], key), 422)


def test_checkout_without_idempotency_key_is_400(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/api/orders", json={"items": [{"sku": "tea-earl-grey-100g", "quantity": 1}]}
        )
        assert_problem(response, 400)


def test_ordering_more_than_available_is_409_and_reserves_nothing(stack: Stack) -> None:
    with stack.client() as client:
        before = available(client, "scale-brewing-0-1g")
        response = order(client, [{"sku": "scale-brewing-0-1g", "quantity": before + 1}])
        assert_problem(response, 409)
        assert available(client, "scale-brewing-0-1g") == before


def test_declined_payment_is_402_and_releases_the_reservation(stack: Stack) -> None:
    with stack.client() as client:
        before = available(client, "espresso-machine")
        response = order(client, [{"sku": "espresso-machine", "quantity": 1}])
        assert_problem(response, 402)
        assert available(client, "espresso-machine") == before


def test_another_customer_gets_404_for_my_order(stack: Stack) -> None:
    with stack.client() as mine, stack.client("other-key") as other:
        created = order(mine, [{"sku": "filters-paper-100", "quantity": 1}])
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        assert_problem(other.get(f"/api/orders/{order_id}"), 404)
        assert mine.get(f"/api/orders/{order_id}").status_code == 200


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_requests_without_a_valid_key_are_401(stack: Stack, key: str | None) -> None:
    with stack.client(key) as client:
        for response in (
            client.get("/api/products"),
            client.get("/api/products/espresso-machine"),
            order(client, [{"sku": "filters-paper-100", "quantity": 1}]),
        ):
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [
        ("order", "GET", f"/orders/{'0' * 8}-0000-4000-8000-{'0' * 12}"),
        ("order", "POST", "/orders"),
        ("inventory", "GET", "/products"),
        ("inventory", "POST", "/reservations"),
        ("payment", "POST", "/charges"),
    ],
)
def test_services_refuse_calls_without_the_service_credential(
    stack: Stack, service: str, method: str, path: str
) -> None:
    with stack.client(None, service=service) as client:
        assert_problem(
            client.request(method, path, headers={"X-Customer-ID": "customer-demo"}), 401
        )
        assert client.get("/healthz").status_code == 200


def test_shadow_traffic_only_from_loadtest_key(stack: Stack) -> None:
    with stack.client() as client, stack.client("loadtest-key") as loadtest:
        assert_problem(client.get("/api/products", headers={"X-Shadow-Traffic": "1"}), 403)
        assert loadtest.get("/api/products", headers={"X-Shadow-Traffic": "1"}).status_code == 200


def test_echoes_request_id_on_success_and_in_problems(stack: Stack) -> None:
    with stack.client() as client:
        ok = client.get("/api/products", headers={"X-Request-ID": "e2e-req-1"})
        assert ok.headers["x-request-id"] == "e2e-req-1"
        missing = client.get("/api/products/no-such-sku", headers={"X-Request-ID": "e2e-req-2"})
        assert missing.headers["x-request-id"] == "e2e-req-2"
        assert assert_problem(missing, 404)["request_id"] == "e2e-req-2"


def test_confirmed_checkout_takes_the_stock_for_good(stack: Stack) -> None:
    with stack.client() as client:
        before = available(client, "dripper-ceramic-v60")
        created = order(client, [{"sku": "dripper-ceramic-v60", "quantity": 3}])
        assert created.status_code == 201, created.text
        assert available(client, "dripper-ceramic-v60") == before - 3


def test_fifty_concurrent_duplicates_make_one_order_and_one_charge(stack: Stack) -> None:
    key = secrets.token_hex(16)
    items = [{"sku": "kettle-gooseneck", "quantity": 1}]
    with stack.client() as client:
        before = available(client, "kettle-gooseneck")

    def post(_: int) -> httpx.Response:
        with stack.client() as own:
            return order(own, items, key)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))

    created = [r for r in responses if r.status_code == 201]
    others = [r for r in responses if r.status_code != 201]
    assert created, [r.text for r in responses[:3]]
    assert len({r.content for r in created}) == 1, "every 201 must carry the identical body"
    for response in others:
        assert_problem(response, 409)
        assert response.headers["retry-after"]
    with stack.client() as client:
        replay = order(client, items, key)
        assert replay.status_code == 201 and replay.content == created[0].content
        assert available(client, "kettle-gooseneck") == before - 1
    order_id = created[0].json()["id"]
    with stack.client(None, service="payment") as payment:
        charges = payment.get(
            "/charges", params={"order_id": order_id}, headers={"X-Service-Token": TOKEN}
        )
    assert charges.status_code == 200, charges.text
    assert [c["status"] for c in charges.json()["items"]] == ["succeeded"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 422),
        (b'{"items": []}', 422),
        (b'{"items": [{"sku": "french-press-1l", "quantity": -1}]}', 422),
        (b'{"items": [{"sku": "french-press-1l", "quantity": 1}], "admin": true}', 422),
        (b'{"items": [{"sku": "french-press-1l", "quantity": 1}]', 400),
        (
            b'{"items": [{"sku": "french-press-1l", "quantity": 1}], "pad": "'
            + b"x" * 200_000
            + b'"}',
            413,
        ),
    ],
    ids=["empty", "no-items", "negative", "unknown-field", "malformed", "oversized"],
)
def test_bad_order_input_gets_4xx_problem_and_changes_nothing(
    stack: Stack, body: bytes, status: int
) -> None:
    with stack.client() as client:
        before = available(client, "french-press-1l")
        response = client.post(
            "/api/orders",
            content=body,
            headers={"Idempotency-Key": secrets.token_hex(16), "Content-Type": "application/json"},
        )
        assert_problem(response, status)
        assert available(client, "french-press-1l") == before


def test_readiness_checks_the_configured_dependencies(stack: Stack) -> None:
    with_redis = stack.mode == "postgres+redis"
    for service in load():
        with stack.client(None, service=service.name) as client:
            response = client.get("/readyz")
        assert response.status_code == 200, response.text
        # The gateway's limiter falls back to memory without Redis, so its readiness does not
        # depend on Redis: a Redis outage must not pull every gateway out of rotation at once.
        expected = {"redis"} if with_redis and not service.gateway else set()
        if service.database:
            expected.add("database")
        assert set(response.json()["checks"]) == expected, (service.name, response.text)
