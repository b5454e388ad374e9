"""GET /metrics: RED per route template, build info, Once tally, exemplars, content negotiation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from servicekit import Metrics, Once, context, exemplar, traffic
from servicekit.testing import lifespan_client

from .conftest import TOKEN

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
#: What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def sampled(flags: str) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-{flags}"}


def samples(text: str, parse: Any = parse_text) -> list[Any]:
    return [sample for family in parse(text) for sample in family.samples]


def find(found: list[Any], name: str, **labels: str) -> list[Any]:
    return [s for s in found if s.name == name and labels.items() <= s.labels.items()]


async def scrape(client: httpx.AsyncClient, accept: str | None = None) -> httpx.Response:
    response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    return response


async def test_plain_text_by_default_with_red_per_route_template(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        for _ in range(3):
            await client.get("/whoami")
        await client.get("/boom")
        await client.get("/no/such/path")
        response = await scrape(client)

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    count = "http_server_request_duration_seconds_count"
    ok = find(found, count, http_route="/whoami", http_response_status_code="200", traffic="live")
    assert [s.value for s in ok] == [3]
    assert [s.value for s in find(found, count, http_route="/boom")] == [1]
    # Unknown paths share one series: a scanner cannot blow up the cardinality.
    assert [s.value for s in find(found, count, http_route="unmatched")] == [1]
    assert find(found, "servicekit_recovered_exceptions_total", exception="RuntimeError")[0].value
    assert find(found, "http_server_active_requests")[0].value == 1  # this scrape


async def test_shadow_traffic_is_labelled_apart(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        await client.get("/whoami", headers={"X-Shadow-Traffic": "1"})
        found = samples((await scrape(client)).text)
    count = "http_server_request_duration_seconds_count"
    assert [s.value for s in find(found, count, http_route="/whoami", traffic="shadow")] == [1]
    assert find(found, count, http_route="/whoami", traffic="live") == []


async def test_openmetrics_for_prometheus_with_trace_exemplars_of_sampled_requests(
    demo_app: FastAPI,
) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        await client.get("/whoami", headers=sampled("01"))
        response = await scrape(client, PROMETHEUS_ACCEPT)

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    buckets = find(
        samples(response.text, parse_openmetrics),
        "http_server_request_duration_seconds_bucket",
        http_route="/whoami",
    )
    exemplars = [s.exemplar for s in buckets if s.exemplar is not None]
    assert len(exemplars) == 1  # on the bucket the observation fell into
    assert exemplars[0].labels == {"trace_id": TRACE}


async def test_no_exemplar_for_an_unsampled_trace(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        await client.get("/whoami", headers=sampled("00"))
        response = await scrape(client, OPENMETRICS)
    buckets = find(
        samples(response.text, parse_openmetrics),
        "http_server_request_duration_seconds_bucket",
        http_route="/whoami",
    )
    assert buckets and all(s.exemplar is None for s in buckets)


async def test_build_info_carries_the_version(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        found = samples((await scrape(client)).text)
    (info,) = find(found, "servicekit_build_info")
    assert info.value == 1 and info.labels["version"] == demo_app.version
    assert info.labels["python_version"].startswith("3.")


async def test_once_constructions_are_the_process_tally(demo_app: FastAPI) -> None:
    once: Once[object] = Once(object, name="test-metrics-client")
    once.get()
    once.get()
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        first = find(samples((await scrape(client)).text), "servicekit_once_constructions_total")
        once.reset()
        once.get()  # a rebuild is a second construction, whatever reset() says
        again = find(samples((await scrape(client)).text), "servicekit_once_constructions_total")
    assert [s.value for s in first if s.labels["name"] == "test-metrics-client"] == [1]
    assert [s.value for s in again if s.labels["name"] == "test-metrics-client"] == [2]
    assert once.constructions == 1


def test_a_failed_construction_is_not_counted() -> None:
    def broken() -> object:
        raise OSError("connection refused")

    once: Once[object] = Once(broken, name="test-metrics-broken")
    with pytest.raises(OSError, match="refused"):
        once.get()
    names = {
        s.labels["name"] for s in find(collect(Metrics("x")), "servicekit_once_constructions_total")
    }
    assert "test-metrics-broken" not in names


def collect(metrics: Metrics) -> list[Any]:
    return [sample for family in metrics.registry.collect() for sample in family.samples]


def test_exemplar_and_traffic_outside_a_request() -> None:
    assert exemplar() is None
    assert traffic() == "live"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("01", {"trace_id": TRACE}), ("03", {"trace_id": TRACE}), ("00", None), ("zz", None)],
)
def test_exemplar_follows_the_sampled_flag(flags: str, expected: dict[str, str] | None) -> None:
    values = {
        context.TRACE_ID: TRACE,
        context.TRACE_FLAGS: flags,
        context.SHADOW: True,
    }
    with context.request_scope(values):
        assert exemplar() == expected
        assert traffic() == "shadow"


def test_apps_in_one_process_have_their_own_registries() -> None:
    first, second = Metrics("a"), Metrics("b")
    first.idempotent_replays.labels("live").inc()
    assert (
        first.registry.get_sample_value("servicekit_idempotent_replays_total", {"traffic": "live"})
        == 1
    )
    assert (
        second.registry.get_sample_value("servicekit_idempotent_replays_total", {"traffic": "live"})
        is None
    )


def test_request_durations_count_as_prometheus_buckets_do() -> None:
    metrics = Metrics("shop")
    durations = metrics.request_duration
    for seconds in (0.001, 0.0011, 0.3, 99.0):  # on a bound, just above it, mid, past the last
        durations.observe("GET", "/items", 200, False, seconds)
    durations.observe("BREW", "/items", 200, False, 0.001)  # invented method: one `_OTHER` series
    durations.observe("TEAPOT", "/items", 200, False, 0.001)
    found = samples(generate_latest(metrics.registry).decode())

    def bucket(method: str, le: str) -> float:
        (sample,) = [
            s
            for s in find(found, "http_server_request_duration_seconds_bucket", le=le)
            if s.labels["http_request_method"] == method
        ]
        return float(sample.value)

    assert [bucket("GET", le) for le in ("0.001", "0.0025", "0.25", "0.5", "10.0", "+Inf")] == [
        1,
        2,
        2,
        3,
        3,
        4,
    ]
    (total,) = find(found, "http_server_request_duration_seconds_sum", http_request_method="GET")
    assert total.value == pytest.approx(0.001 + 0.0011 + 0.3 + 99.0)
    assert bucket("_OTHER", "+Inf") == 2
    methods = {
        s.labels["http_request_method"]
        for s in find(found, "http_server_request_duration_seconds_count")
    }
    assert methods == {"GET", "_OTHER"}


def test_cpu_seconds_of_the_process_grow_with_work() -> None:
    metrics = Metrics("cpu-test")

    def cpu_seconds() -> float:
        (sample,) = find(
            samples(generate_latest(metrics.registry).decode()), "process_cpu_seconds_total"
        )
        return float(sample.value)

    before = cpu_seconds()
    sum(i * i for i in range(2_000_000))  # about 0.1 s of CPU
    assert cpu_seconds() - before > 0.01
