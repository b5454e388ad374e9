"""What the scenarios share: the tuned settings, the gateway client, breaker and fault helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from .cluster import ADMIN_TOKEN, API_KEYS, Stack, wait_until
from .load import Outcome, percentile

#: Order's breakers decide in seconds: 3 failures in a row, or half of 5+ calls in 3 s failed
#: or slow (0.5 s), trip them; 1 s open, then one probe. Order waits 1 s for a downstream.
HTTP_TIMEOUT = 1.0
FAST_BREAKERS = {
    "ORDER_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
    "ORDER_BREAKER_FAILURE_RATE": "50",
    "ORDER_BREAKER_MIN_CALLS": "5",
    "ORDER_BREAKER_WINDOW_SECONDS": "3",
    "ORDER_BREAKER_SLOW_CALL_SECONDS": "0.5",
    "ORDER_BREAKER_SLOW_CALL_RATE": "50",
    "ORDER_BREAKER_CONSECUTIVE_FAILURES": "3",
    "ORDER_BREAKER_RESET_SECONDS": "1",
    "ORDER_BREAKER_HALF_OPEN_PROBES": "1",
    # The gateway's breaker on order (which does not count order's deliberate 503s) reopens
    # as quickly, so a trip never outlasts the scenario that caused it.
    "GATEWAY_BREAKER_RESET_SECONDS": "1",
    "GATEWAY_BREAKER_HALF_OPEN_PROBES": "1",
}
#: A 503 that waits for nothing: half the timeout it replaces, at most.
FAST_FAIL_P99 = HTTP_TIMEOUT / 2


def fast_bound(healthy: Sequence[Outcome]) -> float:
    """The latency a fail-fast answer must stay under: `FAST_FAIL_P99`, or on a machine so
    busy that even served checkouts are slower, their median (a refusal that waited for a
    timeout is slower than both)."""
    return max(FAST_FAIL_P99, percentile((o.latency for o in healthy), 50))


#: Breaker gauge values (servicekit.downstream.breaker.STATE_VALUES).
CLOSED, HALF_OPEN, OPEN = 0, 1, 2


def gateway(stack: Stack, timeout: float = 15.0, connections: int = 100) -> httpx.AsyncClient:
    """A client of the stack's gateway; `connections` bounds the requests it has in flight."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=stack.url("gateway"), timeout=timeout, limits=limits)


def keys(count: int = 1) -> list[str]:
    return list(API_KEYS)[:count]


async def breaker_state(stack: Stack, dependency: str, service: str = "order") -> float:
    return await stack.metric(service, "servicekit_breaker_state", dependency=dependency)


async def rejected_calls(stack: Stack, dependency: str) -> float:
    """Calls order's breaker refused without sending them (it counts every outcome)."""
    return await stack.metric(
        "order", "servicekit_breaker_calls_total", dependency=dependency, outcome="rejected"
    )


async def wait_breaker(stack: Stack, dependency: str, state: int, timeout: float) -> float:
    """Wait until order's breaker for `dependency` reports `state`; seconds waited."""

    async def reached() -> bool:
        return await breaker_state(stack, dependency) == state

    names = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}
    return await wait_until(reached, timeout, f"order's {dependency} breaker {names[state]}")


async def set_faults(stack: Stack, service: str, **faults: Any) -> dict[str, Any]:
    """PUT /admin/faults/{service} through the gateway (DELETE when no fault is given)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with gateway(stack, timeout=10.0) as client:
        path = f"/admin/faults/{service}"
        if faults:
            response = await client.put(path, json=faults, headers=headers)
        else:
            response = await client.delete(path, headers=headers)
        assert response.status_code == 200, response.text
        shown = await client.get(path, headers=headers)
    assert shown.status_code == 200, shown.text
    body: dict[str, Any] = shown.json()
    return body


def assert_clean_failures(outcomes: Sequence[Outcome], allowed: Sequence[int]) -> None:
    """Every answer is one of `allowed`; every refusal a problem body, 429/503 with Retry-After."""
    statuses = sorted({o.status for o in outcomes})
    unexpected = [o for o in outcomes if o.status not in allowed]
    assert not unexpected, f"statuses {statuses}; unexpected: {unexpected[:3]}"
    for o in outcomes:
        if o.status >= 400:
            assert o.is_problem(), f"not a problem body: {o}"
        if o.status in (429, 503):
            assert o.headers.get("retry-after", "").isdigit(), f"no Retry-After: {o}"


def latency_p99(outcomes: Sequence[Outcome]) -> float:
    return percentile((o.latency for o in outcomes), 99)
