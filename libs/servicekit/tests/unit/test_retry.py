"""ServiceClient retries and breaker: what is retried, how long it waits, the budget, the breaker.

Downstreams are `httpx.MockTransport` handlers; waits are recorded by a fake sleep, never slept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from servicekit import (
    AsyncCircuitBreaker,
    BreakerConfig,
    CircuitOpenError,
    Metrics,
    RetryPolicy,
    ServiceClient,
    UnavailableError,
    context,
)
from servicekit.downstream.retry import RetryBudget
from servicekit.testing import FakeClock

Handler = Callable[[httpx.Request], httpx.Response]


class Ceiling(random.Random):
    """Jitter that always draws the top of the range, so delays are predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Downstream:
    """Answers from a script (responses or exceptions), then 200; records every attempt."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script: Iterator[httpx.Response | Exception] = iter(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = next(self.script, httpx.Response(200, json={"ok": True}))
        if isinstance(step, Exception):
            raise step
        return step


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


PATIENT = BreakerConfig(failure_rate=100, min_calls=1_000_000, consecutive_failures=1_000_000)


def client(
    handler: Handler,
    *,
    sleeps: Sleeps | None = None,
    metrics: Metrics | None = None,
    breaker: AsyncCircuitBreaker | None = None,
    **policy: float,
) -> ServiceClient:
    retry = RetryPolicy(rng=Ceiling(), sleep=sleeps or Sleeps(), **policy)  # type: ignore[arg-type]
    return ServiceClient(
        "payment",
        "http://payment",
        token="t",
        transport=httpx.MockTransport(handler),
        retry=retry,
        metrics=metrics,
        breaker=breaker or AsyncCircuitBreaker("payment", PATIENT),
    )


def retries(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "servicekit_client_retries_total", {"server_address": "payment", "outcome": outcome}
    )


# --- what is retried --------------------------------------------------------------------------


async def test_retries_an_idempotent_call_after_a_transport_error() -> None:
    downstream = Downstream(httpx.ConnectError("refused"))
    metrics = Metrics("order")
    response = await client(downstream, metrics=metrics).request("GET", "/charges")
    assert response.status_code == 200
    assert len(downstream.requests) == 2
    assert retries(metrics, "sent") == 1
    assert retries(metrics, "budget_exhausted") == 0


async def test_never_retries_a_post_unless_marked_idempotent() -> None:
    plain = Downstream(httpx.ReadTimeout("slow"))
    with pytest.raises(UnavailableError):
        await client(plain).request("POST", "/charges")
    assert len(plain.requests) == 1

    keyed = Downstream(httpx.RemoteProtocolError("connection reset"))
    response = await client(keyed).request(
        "POST", "/charges", headers={"Idempotency-Key": "order-1"}, idempotent=True
    )
    assert response.status_code == 200
    assert [r.headers["idempotency-key"] for r in keyed.requests] == ["order-1", "order-1"]


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")]
)
async def test_never_retries_a_timeout(error: Exception) -> None:
    # A timeout spent the whole budget of the call: a second one would double the wait.
    downstream = Downstream(error)
    with pytest.raises(UnavailableError, match="timed out"):
        await client(downstream).request("GET", "/charges")
    assert len(downstream.requests) == 1


@pytest.mark.parametrize(
    ("answer", "attempts"),
    [
        (httpx.Response(502), 2),
        (httpx.Response(503), 2),
        (httpx.Response(504), 2),
        (httpx.Response(503, headers={"Retry-After": "0"}), 2),
        # The server asks for more patience than a retry inside this request has.
        (httpx.Response(503, headers={"Retry-After": "1"}), 1),
        (httpx.Response(429), 1),  # slow down: retrying would make it worse
        (httpx.Response(500), 1),  # a bug; the same request would hit it again
        (httpx.Response(409), 1),  # a deliberate answer
    ],
    ids=["502", "503", "504", "503-retry-after-0", "503-retry-after-1", "429", "500", "409"],
)
async def test_retries_only_answers_that_say_try_again(
    answer: httpx.Response, attempts: int
) -> None:
    downstream = Downstream(answer)
    response = await client(downstream).request("GET", "/charges")
    assert len(downstream.requests) == attempts
    assert response.status_code == (200 if attempts == 2 else answer.status_code)


async def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    sleeps = Sleeps()
    downstream = Downstream(*[httpx.ConnectError("refused")] * 5)
    with pytest.raises(UnavailableError):
        await client(
            downstream, sleeps=sleeps, max_attempts=5, base_delay=0.1, max_delay=0.5
        ).request("GET", "/x")
    # Ceiling() draws the top of each uniform(0, cap) range: 0.1, 0.2, 0.4, then the cap.
    assert sleeps.delays == [0.1, 0.2, 0.4, 0.5]
    assert len(downstream.requests) == 5


def test_full_jitter_draws_between_zero_and_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, rng=random.Random(7))
    for retry in range(1, 8):
        cap = min(1.0, 0.1 * 2 ** (retry - 1))
        draws = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8 and min(draws) < cap * 0.2


async def test_never_retries_past_the_request_deadline() -> None:
    sleeps = Sleeps()
    downstream = Downstream(httpx.ConnectError("refused"))
    with (
        context.request_scope({context.DEADLINE: time.monotonic() + 0.05}),
        pytest.raises(UnavailableError),
    ):
        await client(downstream, sleeps=sleeps, base_delay=0.1, max_delay=0.1).request("GET", "/x")
    assert len(downstream.requests) == 1 and sleeps.delays == []


def test_budget_allows_ten_percent_plus_a_burst() -> None:
    budget = RetryBudget(ratio=0.1, max_tokens=10)
    granted = 0
    for _ in range(1000):
        budget.deposit()
        granted += budget.withdraw() + budget.withdraw()
    # 1000 requests each asking for 2 retries: 10 from the burst, then one per 10 requests.
    assert 100 <= granted <= 110


async def test_retry_budget_caps_retries_at_ten_percent_of_requests() -> None:
    metrics = Metrics("order")
    downstream = Downstream(*[httpx.Response(503)] * 10_000)
    payment = client(downstream, metrics=metrics, max_attempts=3)
    for _ in range(1000):
        response = await payment.request("GET", "/charges")
        assert response.status_code in (200, 503)
    sent = retries(metrics, "sent")
    assert sent is not None and 100 <= sent <= 110
    assert len(downstream.requests) == 1000 + sent
    assert (retries(metrics, "budget_exhausted") or 0) > 0


# --- the breaker around every attempt ---------------------------------------------------------


async def test_breaker_counts_5xx_and_transport_errors_not_deliberate_4xx(
    fake_clock: FakeClock,
) -> None:
    breaker = AsyncCircuitBreaker(
        "payment", BreakerConfig(consecutive_failures=3), clock=fake_clock
    )
    answers = [httpx.Response(409), httpx.Response(402), httpx.Response(404)] * 10
    downstream = Downstream(
        *answers, httpx.Response(500), httpx.Response(503), httpx.ConnectError("x")
    )
    payment = client(downstream, breaker=breaker)
    for _ in answers:
        await payment.request("POST", "/charges")
    assert breaker.current_state == "closed"
    assert (await payment.request("POST", "/charges")).status_code == 500
    assert (await payment.request("POST", "/charges")).status_code == 503
    assert breaker.current_state == "closed"
    with pytest.raises(UnavailableError):
        await payment.request("POST", "/charges")
    assert breaker.current_state == "open"


async def test_open_breaker_fails_fast_without_sending_or_retrying(fake_clock: FakeClock) -> None:
    breaker = AsyncCircuitBreaker(
        "payment", BreakerConfig(consecutive_failures=2), clock=fake_clock
    )
    sleeps = Sleeps()
    downstream = Downstream(*[httpx.Response(502)] * 10)
    payment = client(downstream, breaker=breaker, sleeps=sleeps, max_attempts=5)
    # Attempt 1 and its retry fail and trip the breaker; the second retry is refused by it,
    # and the call ends with what was actually answered: CircuitOpenError means "nothing sent".
    last = await payment.request("GET", "/charges")
    assert last.status_code == 502
    assert len(downstream.requests) == 2 and len(sleeps.delays) == 2
    with pytest.raises(CircuitOpenError) as info:
        await payment.request("GET", "/charges")
    assert len(downstream.requests) == 2
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "10"
    fake_clock.advance(4)
    with pytest.raises(CircuitOpenError) as again:
        await payment.request("GET", "/charges")
    assert len(downstream.requests) == 2
    assert again.value.headers["Retry-After"] == "6"


async def test_a_retry_refused_by_the_breaker_ends_with_the_sent_attempts_error(
    fake_clock: FakeClock,
) -> None:
    # Attempt 1 was sent and its answer lost (a charge may exist); the breaker then opens.
    # The caller must see "unavailable, maybe done", never "circuit open, nothing sent".
    breaker = AsyncCircuitBreaker(
        "payment", BreakerConfig(consecutive_failures=1), clock=fake_clock
    )
    downstream = Downstream(httpx.ConnectError("reset"))
    payment = client(downstream, breaker=breaker, max_attempts=3)
    with pytest.raises(UnavailableError) as info:
        await payment.request("POST", "/charges", idempotent=True)
    assert not isinstance(info.value, CircuitOpenError)
    assert len(downstream.requests) == 1


async def test_backpressure_can_be_kept_out_of_the_breaker(fake_clock: FakeClock) -> None:
    breaker = AsyncCircuitBreaker("order", BreakerConfig(consecutive_failures=2), clock=fake_clock)
    shed = httpx.Response(503, headers={"Retry-After": "1"})
    downstream = Downstream(*[shed] * 5, httpx.Response(503), httpx.Response(503))
    order = ServiceClient(
        "order",
        "http://order",
        token="t",
        transport=httpx.MockTransport(downstream),
        breaker=breaker,
        backpressure_trips_breaker=False,
        retry=RetryPolicy(max_attempts=1),
    )
    for _ in range(5):
        assert (await order.request("POST", "/orders")).status_code == 503
    assert breaker.current_state == "closed"
    # A 503 without Retry-After is no deliberate refusal: it counts.
    await order.request("POST", "/orders")
    await order.request("POST", "/orders")
    assert breaker.current_state == "open"


async def test_records_client_duration_per_attempt() -> None:
    metrics = Metrics("order")
    downstream = Downstream(httpx.ConnectError("refused"), httpx.Response(201))
    await client(downstream, metrics=metrics).request("POST", "/charges", idempotent=True)

    def count(status: str) -> float | None:
        return metrics.registry.get_sample_value(
            "http_client_request_duration_seconds_count",
            {
                "server_address": "payment",
                "http_request_method": "POST",
                "http_response_status_code": status,
            },
        )

    assert count("error") == 1 and count("201") == 1


async def test_default_client_has_a_breaker_of_its_own() -> None:
    downstream = Downstream(*[httpx.ConnectError("refused")] * 10)
    payment = ServiceClient(
        "payment", "http://payment", token="t", transport=httpx.MockTransport(downstream)
    )
    for _ in range(5):
        with pytest.raises(UnavailableError):
            await payment.request("POST", "/charges")
    with pytest.raises(CircuitOpenError):
        await payment.request("POST", "/charges")
    assert len(downstream.requests) == 5
