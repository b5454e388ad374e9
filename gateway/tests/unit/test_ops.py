"""The ops page's parts without servers: metrics reading, rates, sessions, the collector, traces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from gateway.ops.collector import IDLE_SECONDS, OpsCollector
from gateway.ops.figures import parse, quantile, rates
from gateway.ops.session import LIFETIME_SECONDS, SessionSigner
from gateway.ops.traces import START_BYTES, TraceTail
from servicekit import Metrics, RoutingTable

DURATION = "http_server_request_duration_seconds"


def sample(name: str, value: float, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}"


def exposition(
    ok: int, errors: int, *, slow: int = 0, breaker: int = 0, opened: int = 0, shed: int = 0
) -> str:
    """A service's /metrics text: `ok` answers under 10 ms, `slow` at 1 s, `errors` 503s."""
    ok_200 = {"http_route": "/orders", "http_response_status_code": "200"}
    err_503 = {"http_route": "/orders", "http_response_status_code": "503"}
    # Probes are the page looking, not traffic.
    probe = {"http_route": "/healthz", "http_response_status_code": "200"}
    shed_by = {"tier": "service", "reason": "concurrency"}
    lines = [
        f"# TYPE {DURATION} histogram",
        sample(f"{DURATION}_bucket", ok, le="0.01", **ok_200),
        sample(f"{DURATION}_bucket", ok + slow, le="1.0", **ok_200),
        sample(f"{DURATION}_bucket", ok + slow, le="+Inf", **ok_200),
        sample(f"{DURATION}_count", ok + slow, **ok_200),
        sample(f"{DURATION}_bucket", errors, le="0.01", **err_503),
        sample(f"{DURATION}_bucket", errors, le="+Inf", **err_503),
        sample(f"{DURATION}_count", errors, **err_503),
        sample(f"{DURATION}_bucket", 999, le="+Inf", **probe),
        sample(f"{DURATION}_count", 999, **probe),
        "# TYPE servicekit_breaker_state gauge",
        sample("servicekit_breaker_state", breaker, dependency="payment"),
        "# TYPE servicekit_breaker_transitions counter",
        sample(
            "servicekit_breaker_transitions_total",
            opened,
            dependency="payment",
            from_state="closed",
            to_state="open",
        ),
        "# TYPE servicekit_shed_requests counter",
        sample("servicekit_shed_requests_total", shed, traffic="live", **shed_by),
        sample("servicekit_shed_requests_total", shed, traffic="shadow", **shed_by),
        "# TYPE servicekit_read_only_mode gauge",
        "servicekit_read_only_mode 1",
    ]
    return "\n".join(lines) + "\n"


def test_reads_red_figures_without_the_probes() -> None:
    figures = parse(exposition(90, 10, breaker=2, opened=1, shed=3))
    assert (figures.requests, figures.errors) == (100, 10)
    assert figures.breakers == {"payment": "open"}
    assert figures.transitions[("payment", "closed", "open")] == 1
    assert figures.shed[("service", "concurrency")] == 6
    assert figures.read_only and not figures.degraded


def test_rates_come_from_the_difference_between_two_scrapes() -> None:
    before = parse(exposition(100, 0))
    after = parse(exposition(190, 10, shed=5))
    r = rates(before, after, 5.0)
    assert r.rps == pytest.approx(20.0)
    assert r.error_pct == pytest.approx(10.0)
    assert r.p50_ms is not None and r.p50_ms <= 10
    assert r.shed_per_s[("service", "concurrency")] == pytest.approx(2.0)


def test_p99_follows_the_slow_answers_of_the_window_only() -> None:
    before = parse(exposition(1000, 0))
    after = parse(exposition(1090, 0, slow=10))
    r = rates(before, after, 1.0)
    assert r.p99_ms is not None and 10 < r.p99_ms <= 1000
    # All of the earlier thousand fast answers were before the window: they do not dilute it.
    assert rates(parse(exposition(0, 0)), after, 1.0).p99_ms < r.p99_ms  # type: ignore[operator]


def test_a_restarted_service_counts_from_zero_not_negative() -> None:
    r = rates(parse(exposition(500, 0)), parse(exposition(20, 0)), 2.0)
    assert r.rps == pytest.approx(10.0)


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, {}) is None
    assert quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) is None


def test_a_session_cookie_is_bound_to_the_admin_token_and_expires() -> None:
    signer = SessionSigner("token-a")
    session, cookie = signer.issue("ada", now=1000)
    assert signer.verify(cookie, now=1001) == session
    assert signer.verify(cookie, now=1000 + LIFETIME_SECONDS) is None
    assert SessionSigner("token-b").verify(cookie, now=1001) is None
    payload, mac = cookie.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    for bad in (None, "", "x", f"{forged}.{mac}", f"{payload}.{mac[:-1]}", "a.b.c"):
        assert signer.verify(bad, now=1001) is None
    token = signer.csrf_token(session)
    assert signer.csrf_matches(session, token)
    other, _ = signer.issue("ada", now=1000)
    assert not signer.csrf_matches(other, token)
    assert not signer.csrf_matches(session, None)


def upstream(texts: list[str]) -> httpx.MockTransport:
    """One service whose /metrics answers the next text at every scrape (the last one stays)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(200, text=texts.pop(0) if len(texts) > 1 else texts[0])
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "version": "1.2.3"})
        return httpx.Response(503, json={"detail": "database: unreachable"})

    return httpx.MockTransport(handle)


def collector(transport: httpx.MockTransport, clock: list[float]) -> OpsCollector:
    return OpsCollector(
        services={"gateway": None, "order": "http://order.test"},
        registry=Metrics("gateway").registry,
        routing=RoutingTable(),
        traces_dir=None,
        canary_dir=None,
        transport=transport,
        clock=lambda: clock[0],
    )


async def test_the_collector_sees_health_rates_and_breaker_transitions() -> None:
    clock = [0.0]
    texts = [exposition(10, 0), exposition(20, 5, breaker=2, opened=1)]
    ops = collector(upstream(texts), clock)
    async with httpx.AsyncClient(transport=ops._transport) as client:
        await ops.tick(client)
        clock[0] = 1.0
        await ops.tick(client)
    order = next(s for s in ops.snapshot()["services"] if s["name"] == "order")
    assert order["healthy"] and not order["ready"]
    assert order["ready_detail"] == "database: unreachable"
    assert order["version"] == "1.2.3"
    assert order["now"]["rps"] == 15.0
    assert order["now"]["error_pct"] == pytest.approx(33.33)
    [breaker] = order["breakers"]
    assert breaker["state"] == "open"
    assert [(t["from"], t["to"]) for t in breaker["transitions"]] == [("closed", "open")]
    gateway = next(s for s in ops.snapshot()["services"] if s["name"] == "gateway")
    assert gateway["healthy"] and gateway["ready"]


async def test_the_collector_runs_only_while_watched() -> None:
    clock = [0.0]
    ops = collector(upstream([exposition(1, 0)]), clock)
    ops.interval = 0.01
    assert not ops.running  # nothing runs until the page is opened
    ops.watch()
    assert ops.running
    await asyncio.sleep(0.05)
    clock[0] = IDLE_SECONDS + 1  # nobody looked since
    for _ in range(100):
        if not ops.running:
            break
        await asyncio.sleep(0.01)
    assert not ops.running
    ops.watch()
    await ops.aclose()
    assert not ops.running


def span(trace_id: str, parent: str | None, path: str = "/api/orders") -> str:
    return json.dumps(
        {
            "trace_id": trace_id,
            "span_id": "1" * 16,
            "parent_span_id": parent,
            "name": f"POST {path}",
            "service": "gateway",
            "start_time_unix_nano": 1_000_000_000,
            "end_time_unix_nano": 1_250_000_000,
            "status": "UNSET",
            "attributes": {"url.path": path, "http.response.status_code": 201},
        }
    )


def test_traces_are_listed_by_their_root_span_and_read_incrementally(tmp_path: Path) -> None:
    file = tmp_path / "gateway.jsonl"
    file.write_text(
        "x" * (START_BYTES + 10) + "\n" + span("a" * 32, None) + "\n" + span("b" * 32, "2" * 16)
    )
    tail = TraceTail(tmp_path)
    tail.read()
    assert [t["trace_id"] for t in tail.latest()] == ["a" * 32]
    assert tail.latest()[0]["duration_ms"] == 250.0
    with file.open("a") as handle:  # a torn line is read once it is whole
        handle.write("\n" + span("c" * 32, None)[:20])
    tail.read()
    assert len(tail.latest()) == 1
    with file.open("a") as handle:
        handle.write(span("c" * 32, None)[20:] + "\n" + span("d" * 32, None, "/ops/events") + "\n")
    tail.read()
    assert sorted(t["trace_id"] for t in tail.latest()) == ["a" * 32, "c" * 32]


def test_reads_the_text_format_as_prometheus_client_does() -> None:
    from gateway.ops.figures import READ, samples
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics("order")
    metrics.request_duration.observe("GET", "/orders/{id}", 200, False, 0.004)
    metrics.request_duration.observe("POST", '/odd "route"\\path', 503, True, 2.0)
    metrics.breaker_state.labels("payment").set(2)
    metrics.breaker_transitions.labels("payment", "closed", "open").inc()
    metrics.shed_requests.labels("data", "read_only", "live").inc(3)
    text = generate_latest(metrics.registry).decode()
    expected = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in READ
    ]
    assert sorted(samples(text), key=repr) == sorted(expected, key=repr)
    assert any(labels.get("http_route") == '/odd "route"\\path' for _, labels, _ in expected)
