"""ServiceClient: propagation headers, credential, timeouts and transport errors as 503."""

from __future__ import annotations

import time

import httpx
import pytest
from servicekit import ServiceClient, UnavailableError, context, verify_service_token


async def test_propagates_request_identity_trace_and_credential() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = ServiceClient(
        "inventory", "http://inventory", token="tok", transport=httpx.MockTransport(handler)
    )
    trace = "0af7651916cd43dd8448eb211c80319c"
    with context.request_scope(
        {
            context.REQUEST_ID: "r-1",
            context.TRACE_ID: trace,
            context.BAGGAGE: "tenant=a",
            context.SHADOW: True,
            context.DEADLINE: time.monotonic() + 1.5,
        }
    ):
        response = await client.request("GET", "/products")
    await client.aclose()
    assert response.status_code == 200
    headers = seen[0].headers
    assert headers["x-request-id"] == "r-1"
    assert headers["traceparent"].startswith(f"00-{trace}-")
    # The dye rides in baggage too (contract.SHADOW_BAGGAGE_MEMBER).
    assert headers["baggage"] == "tenant=a,traffic=shadow"
    assert headers["x-shadow-traffic"] == "1"
    # A token signed with the secret, for this downstream; the secret itself never travels.
    claims = verify_service_token(
        headers["x-service-token"], ["tok"], audience="inventory", now=time.time()
    )
    assert claims.caller == "service" and "tok" not in headers["x-service-token"]
    assert 1 <= int(headers["x-request-timeout-ms"]) <= 1500


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_transport_failures_become_unavailable(error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    client = ServiceClient(
        "payment", "http://payment", token="t", transport=httpx.MockTransport(handler)
    )
    with pytest.raises(UnavailableError) as info:
        await client.request("POST", "/charges")
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"


async def test_expired_deadline_fails_before_calling() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200)

    client = ServiceClient(
        "payment", "http://payment", token="t", transport=httpx.MockTransport(handler)
    )
    with (
        context.request_scope({context.DEADLINE: time.monotonic() - 1}),
        pytest.raises(UnavailableError),
    ):
        await client.request("GET", "/x")
    assert calls == 0


async def test_underlying_http_client_is_built_once_under_concurrency() -> None:
    import asyncio

    client = ServiceClient(
        "inv", "http://inv", token="t", transport=httpx.MockTransport(lambda r: httpx.Response(204))
    )
    await asyncio.gather(*(client.request("GET", "/") for _ in range(500)))
    assert client._client.constructions == 1
    await client.aclose()


async def test_caller_headers_cannot_replace_the_credential_and_raw_body_is_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201)

    client = ServiceClient(
        "order", "http://order", token="real", transport=httpx.MockTransport(handler)
    )
    await client.request(
        "POST",
        "/orders",
        content=b'{"items": []}',
        headers={"X-Service-Token": "forged", "content-type": "application/json"},
    )
    await client.aclose()
    token = seen[0].headers["x-service-token"]
    assert verify_service_token(token, ["real"], audience="order", now=time.time())
    assert seen[0].content == b'{"items": []}'


def _answer(status: int, slug: str | None, *, retry_after: bool = True) -> httpx.Response:
    headers = {"Retry-After": "1"} if retry_after else {}
    if slug is None:
        return httpx.Response(status, headers=headers, text="plain")
    return httpx.Response(
        status,
        headers={**headers, "content-type": "application/problem+json"},
        json={"type": f"/problems/{slug}", "status": status},
    )


@pytest.mark.parametrize(
    ("answer", "counts", "counts_without_backpressure"),
    [
        # An upstream's admission layer shedding: alive, answered at once; never a failure.
        (_answer(503, "overloaded"), False, False),
        (_answer(503, "read-only"), False, False),
        # Its dependency failing, or a fault: a failure unless the caller opted out.
        (_answer(503, "injected-fault"), True, False),
        (_answer(503, "circuit-open"), True, False),
        (_answer(429, "rate-limited"), True, False),
        # Without Retry-After, a 503 is not deliberate, whatever its body says.
        (_answer(503, "overloaded", retry_after=False), True, True),
        (_answer(500, None), True, True),
        (_answer(503, None), True, False),
        (_answer(409, "out-of-stock"), False, False),
    ],
)
def test_what_counts_against_the_breaker(
    answer: httpx.Response, counts: bool, counts_without_backpressure: bool
) -> None:
    from servicekit.downstream.client import counts_against_breaker

    assert counts_against_breaker(answer) is counts
    assert counts_against_breaker(answer, backpressure=False) is counts_without_backpressure
