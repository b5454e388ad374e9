"""Canary routing: weights, the weighted choice, pins, upstream checks, stores, the client."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import httpx
import pytest
from servicekit import (
    RetryPolicy,
    Route,
    RouteError,
    RoutingTable,
    ServiceClient,
    context,
    contract,
)
from servicekit.downstream.routing import (
    FileStore,
    MemoryStore,
    check_upstream,
    dump_routes,
    parse_routes,
    parse_weight,
)

STABLE = "http://127.0.0.1:8003"
CANARY = "http://127.0.0.1:18003"


@pytest.mark.parametrize(
    ("raw", "weight"), [(0, 0.0), (100, 100.0), ("2", 2.0), (0.5, 0.5), ("12.25", 12.25)]
)
def test_parses_weights_in_percent_with_fractions(raw: object, weight: float) -> None:
    assert parse_weight(raw) == weight


@pytest.mark.parametrize("raw", [-0.1, 100.01, "nan", "inf", "ten", True, None, [], "1e400"])
def test_refuses_weights_outside_0_to_100(raw: object) -> None:
    with pytest.raises(RouteError, match="weight"):
        parse_weight(raw)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000", "http://localhost:9000/", "https://[::1]:443"]
)
def test_accepts_loopback_upstreams_with_a_port(url: str) -> None:
    assert check_upstream(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254:80", "not allowed"),
        ("http://example.com:80", "not allowed"),
        ("http://127.0.0.1", "port"),
        ("ftp://127.0.0.1:21", "http"),
        ("http://127.0.0.1:9000/admin", "nothing after the port"),
        ("http://user:pw@127.0.0.1:9000", "nothing after the port"),
        ("http://127.0.0.1:99999", "valid URL"),
        (42, "http"),
    ],
)
def test_refuses_upstreams_off_the_allow_list(url: object, reason: str) -> None:
    with pytest.raises(RouteError, match=reason):
        check_upstream(url)


def test_allow_list_admits_configured_hosts_only() -> None:
    assert check_upstream("http://payment-canary:8003", ["payment-canary"])
    with pytest.raises(RouteError):
        check_upstream("http://payment-other:8003", ["payment-canary"])


def table(weight: float, seed: int = 13) -> RoutingTable:
    routing = RoutingTable(random_=random.Random(seed).random)
    routing.apply({"payment": Route(CANARY, weight, "0.2.0")})
    return routing


@pytest.mark.parametrize("weight", [2.0, 0.5, 50.0])
def test_weighted_choice_sends_the_weight_within_statistical_bounds(weight: float) -> None:
    draws = 200_000
    routing = table(weight)
    hits = sum(routing.choose("payment", STABLE)[1] for _ in range(draws))
    expected = draws * weight / 100
    # Five standard deviations of a binomial: fails by chance about once in 3.5 million runs.
    bound = 5 * math.sqrt(draws * weight / 100 * (1 - weight / 100))
    assert abs(hits - expected) <= bound, (hits, expected, bound)


def test_weights_0_and_100_are_exact() -> None:
    none, every = table(0.0), table(100.0)
    assert not any(none.choose("payment", STABLE)[1] for _ in range(50_000))
    assert all(every.choose("payment", STABLE) == (CANARY, True) for _ in range(50_000))


def test_a_service_without_a_route_always_goes_to_stable() -> None:
    assert table(100.0).choose("inventory", "http://127.0.0.1:8002") == (
        "http://127.0.0.1:8002",
        False,
    )


def test_a_pinned_request_goes_where_the_pin_says_whatever_the_weight() -> None:
    with context.request_scope({context.CANARY_ROUTE: contract.CANARY}):
        assert table(0.0).choose("payment", STABLE) == (CANARY, True)
    with context.request_scope({context.CANARY_ROUTE: contract.STABLE}):
        assert table(100.0).choose("payment", STABLE) == (STABLE, False)


def test_a_suspended_canary_gets_no_calls_until_its_route_changes() -> None:
    now = [0.0]
    routing = RoutingTable(clock=lambda: now[0])
    routing.apply({"payment": Route(CANARY, 100.0)})
    routing.suspend(CANARY, seconds=5)
    assert routing.choose("payment", STABLE) == (STABLE, False)
    now[0] = 6.0
    assert routing.choose("payment", STABLE) == (CANARY, True)
    routing.suspend(CANARY, seconds=5)
    routing.apply({"payment": Route(CANARY, 100.0, "0.3.0")})
    assert routing.choose("payment", STABLE) == (CANARY, True)


def test_the_pin_is_forwarded_to_the_next_hop() -> None:
    from servicekit import propagation_headers

    with context.request_scope({context.CANARY_ROUTE: contract.CANARY}):
        assert propagation_headers()[contract.CANARY_ROUTE.name] == "canary"
    assert contract.CANARY_ROUTE.parse("sideways") is None
    assert not contract.CANARY_ROUTE.allowed(frozenset({contract.PUBLIC}))
    assert contract.CANARY_ROUTE.allowed(frozenset({contract.ADMIN}))


def test_routing_documents_round_trip_and_bad_ones_are_refused() -> None:
    routes = {"payment": Route(CANARY, 2.5, "0.2.0", "1/5")}
    assert parse_routes(json.loads(json.dumps(dump_routes(routes)))) == routes
    with pytest.raises(RouteError, match="unknown route field"):
        parse_routes({"routes": {"payment": {"upstream": CANARY, "weight": 1, "extra": 1}}})
    with pytest.raises(RouteError, match="not allowed"):
        parse_routes({"routes": {"payment": {"upstream": "http://10.0.0.1:80", "weight": 1}}})


async def test_file_store_persists_across_tables_and_is_replaced_atomically(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run" / "routing.json"
    writer = RoutingTable(FileStore(path))
    await writer.update("payment", Route(CANARY, 2.0, "0.2.0"))
    await writer.update("inventory", Route("http://127.0.0.1:18002", 0.5))
    # A process started later (a restart) reads the same routes.
    reader = RoutingTable(FileStore(path))
    assert await reader.refresh() is True
    assert reader.routes == writer.routes and set(reader.routes) == {"payment", "inventory"}
    assert await reader.refresh() is False  # unchanged: nothing re-applied
    await writer.update("payment", None)
    assert await reader.refresh() is True and set(reader.routes) == {"inventory"}
    assert [p.name for p in path.parent.iterdir()] == ["routing.json"]  # no temp file left


async def test_a_bad_document_keeps_the_last_good_routes(tmp_path: Path) -> None:
    path = tmp_path / "routing.json"
    routing = RoutingTable(FileStore(path))
    await routing.update("payment", Route(CANARY, 10.0))
    path.write_text('{"routes": {"payment": {"upstream": "http://evil.example:80", "weight": 5}}}')
    assert await routing.refresh() is False
    path.write_text("{not json")
    assert await routing.refresh() is False
    assert routing.routes == {"payment": Route(CANARY, 10.0)}


async def test_the_client_keeps_a_call_and_its_retries_on_the_upstream_it_started_on() -> None:
    seen: list[str] = []
    routing = RoutingTable(MemoryStore())
    routing.apply({"payment": Route(CANARY, 100.0)})

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}:{request.url.port}")
        # The route changes while the first attempt is in flight.
        routing.apply({})
        return httpx.Response(503 if len(seen) == 1 else 200, json={})

    client = ServiceClient(
        "payment",
        STABLE,
        token="t",
        transport=httpx.MockTransport(handler),
        routing=routing,
        retry=RetryPolicy(sleep=_no_sleep),
    )
    response = await client.request("GET", "/charges")
    assert response.status_code == 200
    assert seen == ["127.0.0.1:18003", "127.0.0.1:18003"]
    await client.request("GET", "/charges")
    assert seen[-1] == "127.0.0.1:8003"  # a new call follows the new route
    await client.aclose()


async def test_a_canary_refusing_connections_is_suspended_and_the_call_goes_to_stable() -> None:
    seen: list[int | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.port)
        if request.url.port == 18003:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={})

    routing = RoutingTable()
    routing.apply({"payment": Route(CANARY, 100.0)})
    client = ServiceClient(
        "payment", STABLE, token="t", transport=httpx.MockTransport(handler), routing=routing
    )
    # A write (not idempotent): nothing reached the dead canary, so it may go to stable.
    response = await client.request("POST", "/charges", json={})
    assert response.status_code == 201 and seen == [18003, 8003]
    await client.request("POST", "/charges", json={})
    assert seen[-1] == 8003  # suspended: no second try at the dead canary
    await client.aclose()


async def _no_sleep(seconds: float) -> None:
    return None
