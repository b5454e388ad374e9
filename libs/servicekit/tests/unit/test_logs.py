"""JSON logs: one object per line with service, version and ids; one access line per request."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from servicekit import context
from servicekit.telemetry.logs import AccessLogPolicy, JsonFormatter, configure_logging
from servicekit.testing import lifespan_client

from .conftest import TOKEN, DemoSettings, build_demo_app


def log_entries(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_each_request_writes_one_access_line_with_route_status_and_latency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = build_demo_app(access_log_sample=1.0)
    async with lifespan_client(app, headers=TOKEN) as client:
        created = await client.post("/items", json={"name": "a", "quantity": 1})
        missing = await client.get("/nowhere")
    access = [e for e in log_entries(capsys.readouterr().out) if e["logger"] == "servicekit.access"]
    assert len(access) == 2
    first, second = access
    assert first["level"] == "info"
    assert first["message"].startswith("POST /items 201 ")
    assert (first["method"], first["route"], first["path"], first["status"]) == (
        "POST",
        "/items",
        "/items",
        201,
    )
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] >= 0
    assert first["request_id"] == created.headers["x-request-id"]
    assert len(first["trace_id"]) == 32 and len(first["span_id"]) == 16
    assert (first["service"], first["version"]) == ("demo", app.state.settings.version)
    # Unmatched paths are one label, never the raw path (bounded), which stays in `path`.
    assert (second["route"], second["path"], second["status"]) == ("unmatched", "/nowhere", 404)
    assert second["request_id"] == missing.headers["x-request-id"]


async def test_probes_are_logged_at_debug_only(capsys: pytest.CaptureFixture[str]) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            await client.get(path)
    access = [e for e in log_entries(capsys.readouterr().out) if e["logger"] == "servicekit.access"]
    assert access == []
    logging.getLogger("servicekit.access").setLevel(logging.DEBUG)
    try:
        async with lifespan_client(app, headers=TOKEN) as client:
            await client.get("/healthz")
    finally:
        logging.getLogger("servicekit.access").setLevel(logging.NOTSET)
    (probe,) = [
        e for e in log_entries(capsys.readouterr().out) if e["logger"] == "servicekit.access"
    ]
    assert probe["level"] == "debug" and probe["route"] == "/healthz"


async def test_a_handler_error_is_logged_once_with_its_stack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-boom"})
    entries = [e for e in log_entries(capsys.readouterr().out) if e.get("request_id") == "req-boom"]
    stacks = [e for e in entries if "exception" in e]
    assert len(stacks) == 1
    assert "Traceback" in stacks[0]["exception"] and "handler bug" in stacks[0]["exception"]
    assert stacks[0]["trace_id"] == response.json()["trace_id"]
    assert [e["status"] for e in entries if e["logger"] == "servicekit.access"] == [500]


def test_formatter_adds_context_ids_and_extra_fields() -> None:
    formatter = JsonFormatter("svc", "1.2.3")
    record = logging.LogRecord("app", logging.WARNING, __file__, 1, "hi %s", ("there",), None)
    record.order_id = "o-1"
    record._private = "hidden"
    with context.request_scope({context.REQUEST_ID: "r-1", context.TRACE_ID: "t" * 32}):
        entry = json.loads(formatter.format(record))
    assert entry["message"] == "hi there" and entry["level"] == "warning"
    assert (entry["service"], entry["version"]) == ("svc", "1.2.3")
    assert (entry["request_id"], entry["trace_id"]) == ("r-1", "t" * 32)
    assert "span_id" not in entry  # absent values are left out, never null
    assert entry["order_id"] == "o-1" and "_private" not in entry
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_outside_a_request_lines_carry_no_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("svc", version="9")
    logging.getLogger("job").info("tick", extra={"run": 3})
    (entry,) = log_entries(capsys.readouterr().out)
    assert entry["message"] == "tick" and entry["run"] == 3
    assert not {"request_id", "trace_id", "span_id"} & entry.keys()


# --- access log policy --------------------------------------------------------------------

#: Trace ids whose low 64 bits (the sampling key) are the smallest and the largest there are.
LOW_KEY = "ab" * 8 + "0" * 16
HIGH_KEY = "ab" * 8 + "f" * 16


@pytest.mark.parametrize(
    ("status", "latency_ms", "sampled_trace", "expected"),
    [
        (500, 1.0, False, (logging.WARNING, None)),
        (503, 1.0, False, (logging.WARNING, None)),
        (404, 1.0, False, (logging.INFO, None)),
        (429, 1.0, False, (logging.INFO, None)),
        (200, 500.0, False, (logging.INFO, None)),  # slow: at the threshold
        (200, 1.0, True, (logging.INFO, None)),  # its trace is kept: so is its line
        (200, 499.9, False, None),
    ],
)
def test_policy_always_writes_errors_slow_and_traced_requests(
    status: int, latency_ms: float, sampled_trace: bool, expected: tuple[int, None] | None
) -> None:
    policy = AccessLogPolicy(sample=0.0, slow_ms=500.0)
    assert policy.decide(status, latency_ms, HIGH_KEY, sampled_trace=sampled_trace) == expected


def test_policy_samples_shed_refusals_like_successes() -> None:
    policy = AccessLogPolicy(sample=0.25, slow_ms=500.0)
    assert policy.decide(503, 1.0, HIGH_KEY, sampled_trace=False, shed=True) is None
    assert policy.decide(429, 1.0, LOW_KEY, sampled_trace=False, shed=True) == (
        logging.INFO,
        0.25,
    )
    assert policy.decide(503, 1.0, HIGH_KEY, sampled_trace=True, shed=True) == (
        logging.INFO,
        None,
    )


def test_policy_samples_the_rest_by_trace_id_so_every_hop_agrees() -> None:
    policy = AccessLogPolicy(sample=0.25)
    assert policy.decide(200, 1.0, LOW_KEY, sampled_trace=False) == (logging.INFO, 0.25)
    assert policy.decide(201, 1.0, HIGH_KEY, sampled_trace=False) is None
    # The share is kept: over many random ids about a quarter is written.
    ids = [f"{n:016x}{(n * 0x9E3779B97F4A7C15) % (1 << 64):016x}" for n in range(4000)]
    written = sum(policy.decide(200, 1.0, t, sampled_trace=False) is not None for t in ids)
    assert 900 <= written <= 1100
    assert AccessLogPolicy(sample=1.0).decide(200, 1.0, HIGH_KEY, sampled_trace=False) == (
        logging.INFO,
        None,
    )
    with pytest.raises(ValueError, match="sample"):
        AccessLogPolicy(sample=1.5)


def test_policy_sampling_key_compares_as_the_number_it_spells() -> None:
    import random

    draw = random.Random(7)
    for sample in (0.0, 0.01, 0.25, 0.5, 0.999):
        policy = AccessLogPolicy(sample=sample)
        bound = round(sample * (1 << 64))
        for _ in range(2000):
            trace_id = f"{draw.getrandbits(128):032x}"
            expected = int(trace_id[16:], 16) < bound
            assert (policy.decide(200, 1.0, trace_id, sampled_trace=False) is not None) == expected


async def test_the_app_logs_errors_and_sampled_traces_and_skips_unsampled_successes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = build_demo_app(access_log_sample=0.0)
    traced = f"00-{'1' * 32}-{'2' * 16}-01"
    async with lifespan_client(app, headers=TOKEN) as client:
        await client.get("/whoami")  # 200, unsampled: no line
        await client.get("/whoami", headers={"traceparent": traced})  # 200, trace kept
        await client.get("/nowhere")  # 404
        await client.get("/boom")  # 500
    access = [e for e in log_entries(capsys.readouterr().out) if e["logger"] == "servicekit.access"]
    assert [(e["status"], e["level"]) for e in access] == [
        (200, "info"),
        (404, "info"),
        (500, "warning"),
    ]
    assert access[0]["trace_id"] == "1" * 32
    assert all("sampled" not in e for e in access)


async def test_a_sampled_line_says_which_share_it_stands_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = build_demo_app(access_log_sample=0.5)
    async with lifespan_client(app, headers=TOKEN) as client:
        for key in (LOW_KEY, HIGH_KEY):  # an unsampled caller's trace: 50% by its id
            await client.get("/whoami", headers={"traceparent": f"00-{key}-{'2' * 16}-00"})
    access = [e for e in log_entries(capsys.readouterr().out) if e["logger"] == "servicekit.access"]
    assert [(e["trace_id"], e["sampled"]) for e in access] == [(LOW_KEY, 0.5)]


def test_the_sample_is_a_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEMO_ACCESS_LOG_SAMPLE", raising=False)
    assert DemoSettings().access_log_sample == 0.01
    monkeypatch.setenv("DEMO_ACCESS_LOG_SAMPLE", "1.0")
    assert DemoSettings().access_log_sample == 1.0
