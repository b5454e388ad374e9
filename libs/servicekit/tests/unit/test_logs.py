"""JSON logs: one object per line with service, version and ids; one access line per request."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from servicekit import context
from servicekit.logs import JsonFormatter, configure_logging
from servicekit.testing import lifespan_client

from .conftest import TOKEN, build_demo_app


def log_entries(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_each_request_writes_one_access_line_with_route_status_and_latency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = build_demo_app()
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
    assert (first["service"], first["version"]) == ("demo", "0.1.0")
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
