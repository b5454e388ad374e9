"""The access tier in the app: who gets 429 or 503, with which headers, and what is never limited.

Counting is in process memory here (no GATEWAY_REDIS_URL); limits are per minute or hour so
no window ends during a test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from gateway.access import AccessPolicy, rule
from gateway.main import create_app
from gateway.rate_limiter import parse_limit
from prometheus_client import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from servicekit.testing import lifespan_client

from .conftest import FakeUpstreams, make_settings

ORDER_BODY = b'{"items": [{"sku": "mug", "quantity": 1}]}'
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}


@asynccontextmanager
async def gateway(upstreams: FakeUpstreams, **limits: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        **{
            "global_rate_limit": "1000/hour",
            "client_rate_limit": "1000/hour",
            "checkout_rate_limit": "1000/hour",
            **limits,
        }
    )
    app = create_app(settings, transport=httpx.MockTransport(upstreams))
    async with lifespan_client(app) as client:
        yield client


def _shed(metrics_text: str) -> dict[tuple[str, str, str], float]:
    families: list[Metric] = list(text_string_to_metric_families(metrics_text))
    return {
        (s.labels["tier"], s.labels["reason"], s.labels["traffic"]): s.value
        for family in families
        if family.name == "servicekit_shed_requests"
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_client_over_its_limit_gets_429_problem_with_rate_limit_headers(
    upstreams: FakeUpstreams,
) -> None:
    async with gateway(upstreams, client_rate_limit="3/minute") as client:
        for _ in range(3):
            assert (await client.get("/api/products", headers=ALICE)).status_code == 200
        refused = await client.get("/api/products", headers=ALICE)
        other = await client.get("/api/products", headers=BOB)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["type"] == "/problems/client-rate-limited"
    assert body["request_id"] == refused.headers["x-request-id"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["ratelimit-reset"]) <= 60
    assert refused.headers["ratelimit-policy"] == "3;w=60"
    assert other.status_code == 200, "another customer has a budget of its own"
    assert len(upstreams.requests) == 4, "a refused request never reaches an upstream"


async def test_global_limit_answers_503_with_retry_after_for_everybody(
    upstreams: FakeUpstreams,
) -> None:
    async with gateway(upstreams, global_rate_limit="4/minute") as client:
        answers = [
            (await client.get("/api/products", headers=key)).status_code
            for key in (ALICE, BOB, ALICE, BOB, ALICE, BOB)
        ]
        refused = await client.get("/api/products", headers=BOB)
    assert answers == [200, 200, 200, 200, 503, 503]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/gateway-rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_health_metrics_and_admin_are_not_globally_limited(
    upstreams: FakeUpstreams,
) -> None:
    async with gateway(upstreams, global_rate_limit="1/hour") as client:
        assert (await client.get("/api/products", headers=ALICE)).status_code == 200
        assert (await client.get("/api/products", headers=ALICE)).status_code == 503
        for _ in range(5):
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await client.get(path)).status_code == 200, path
        # An operator can still act during a flood.
        assert (await client.get("/admin/faults/payment", headers=ADMIN)).status_code == 200


async def test_checkout_limit_counts_only_checkouts(upstreams: FakeUpstreams) -> None:
    upstreams.handler = lambda request: httpx.Response(201, json={"id": "o-1"})
    async with gateway(upstreams, checkout_rate_limit="2/minute") as client:

        def checkout(key: str) -> Any:
            return client.post(
                "/api/orders", content=ORDER_BODY, headers=ALICE | {"Idempotency-Key": key}
            )

        assert [(await checkout(k)).status_code for k in "abc"] == [201, 201, 429]
        refused = await checkout("d")
        # Reads are not checkouts, and Bob has his own checkout budget.
        assert (await client.get("/api/products", headers=ALICE)).status_code == 201
        assert (
            await client.post(
                "/api/orders", content=ORDER_BODY, headers=BOB | {"Idempotency-Key": "b"}
            )
        ).status_code == 201
    assert refused.json()["type"] == "/problems/checkout-rate-limited"
    assert refused.headers["ratelimit-limit"] == "2"
    assert "retry-after" in refused.headers


async def test_callers_without_a_valid_key_are_limited_by_address(
    upstreams: FakeUpstreams,
) -> None:
    async with gateway(upstreams, client_rate_limit="2/minute") as client:
        statuses = [
            (
                await client.get("/api/products", headers={"Authorization": f"Bearer guess-{i}"})
            ).status_code
            for i in range(4)
        ]
        assert (await client.get("/api/products", headers=ALICE)).status_code == 200
    assert statuses == [401, 401, 429, 429]


async def test_refusals_are_counted_by_reason_and_traffic(upstreams: FakeUpstreams) -> None:
    async with gateway(
        upstreams, client_rate_limit="1/minute", global_rate_limit="2/minute"
    ) as client:
        before = _shed((await client.get("/metrics")).text)
        await client.get("/api/products", headers=ALICE)
        await client.get("/api/products", headers=ALICE)  # client_rate
        shadow = {"X-Shadow-Traffic": "1", "Authorization": "Bearer lt-key"}
        await client.get("/api/products", headers=shadow)  # counted apart: no live budget
        assert (await client.get("/api/products", headers=BOB)).status_code == 200
        await client.get("/api/products", headers={"Authorization": "Bearer lt-key"})  # global
        after = _shed((await client.get("/metrics")).text)
    assert all(value == 0 for value in before.values())
    assert {key for key in before} >= {
        ("access", reason, traffic)
        for reason in ("global_rate", "client_rate", "checkout_rate")
        for traffic in ("live", "shadow")
    }
    assert after[("access", "client_rate", "live")] == 1
    assert after[("access", "global_rate", "live")] == 1
    assert after[("access", "checkout_rate", "live")] == 0


async def test_a_dyed_refusal_is_labelled_shadow(upstreams: FakeUpstreams) -> None:
    async with gateway(upstreams, client_rate_limit="1/minute") as client:
        shadow = {"X-Shadow-Traffic": "1", "Authorization": "Bearer lt-key"}
        assert (await client.get("/api/products", headers=shadow)).status_code == 200
        assert (await client.get("/api/products", headers=shadow)).status_code == 429
        after = _shed((await client.get("/metrics")).text)
    assert after[("access", "client_rate", "shadow")] == 1
    assert after[("access", "client_rate", "live")] == 0


@pytest.mark.parametrize("field", ["global_rate_limit", "client_rate_limit", "checkout_rate_limit"])
@pytest.mark.parametrize("value", ["lots", "200/fortnight", "", "10/second;100/minute"])
def test_settings_refuse_a_limit_that_is_not_one_limit(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        make_settings(**{field: value})


def test_limits_env_uses_limits_notation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CLIENT_RATE_LIMIT", "25/minute")
    settings = make_settings()
    assert parse_limit(settings.client_rate_limit).amount == 25


@pytest.mark.parametrize(
    ("limit", "processes", "share"),
    [("10/minute", 1, 10), ("10/minute", 3, 4), ("10/minute", 20, 1), ("7/second", 7, 1)],
)
def test_a_fail_closed_rule_gives_each_process_its_share(
    limit: str, processes: int, share: int
) -> None:
    made = rule("checkout", parse_limit(limit), processes=processes)
    assert made.item.amount == int(limit.split("/")[0])
    assert made.local_item.amount == share
    assert made.local_item.get_expiry() == made.item.get_expiry()


def test_only_the_checkout_limit_is_fail_closed() -> None:
    policy = AccessPolicy.from_limits(
        global_limit="100/second", client_limit="10/second", checkout_limit="4/minute", processes=4
    )
    same: Callable[[Any], bool] = lambda r: r.item.amount == r.local_item.amount  # noqa: E731
    assert same(policy.global_rule) and same(policy.client_rule)
    assert policy.checkout_rule.local_item.amount == 1


def _shadow_samples(metrics_text: str) -> dict[str, float]:
    """Every sample labelled traffic="shadow" that is not zero, by its series."""
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.labels.get("traffic") == "shadow"
        and sample.value != 0
        and not sample.name.endswith("_created")
    }


async def test_a_dye_without_the_loadtest_scope_is_refused_before_anything_counts_it(
    upstreams: FakeUpstreams,
) -> None:
    dyed = {**ALICE, "X-Shadow-Traffic": "1"}
    async with gateway(upstreams, client_rate_limit="2/minute") as client:
        first = await client.get("/api/products", headers=dyed)
        # Over its rate limit with live requests, the same caller's dye is still a 403, and
        # neither refusal is counted as shadow traffic.
        live = [(await client.get("/api/products", headers=ALICE)).status_code for _ in range(3)]
        later = await client.get("/api/products", headers=dyed)
        metrics = (await client.get("/metrics")).text
    assert first.status_code == later.status_code == 403
    assert first.json()["type"] == "/problems/shadow-traffic-forbidden"
    assert live == [200, 200, 429]
    assert len(upstreams.requests) == 2
    assert _shadow_samples(metrics) == {}
    refused = [
        sample
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
        and sample.labels.get("http_response_status_code") == "403"
    ]
    assert [s.labels.get("traffic") for s in refused] == ["live"]
    assert refused[0].value == 2
