"""The dye's second carrier (W3C baggage `traffic=shadow`) and its marks on logs and spans."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from servicekit import context, contract, propagation_headers
from servicekit.contract import Caller
from servicekit.edge.middleware import EdgeMiddleware
from servicekit.telemetry.logs import JsonFormatter
from servicekit.telemetry.tracing import Tracing, child_span
from starlette.types import Receive, Scope, Send


class KeyTrust:
    """A gateway-like trust: `Bearer load` carries the loadtest scope, `Bearer plain` does not."""

    reads = frozenset({b"authorization"})

    def identify(self, scope: Scope, headers: Mapping[bytes, str]) -> Caller:
        scopes = {contract.LOADTEST} if headers.get(b"authorization") == "Bearer load" else set()
        return Caller(frozenset({contract.PUBLIC, *scopes}))


def edge_app(seen: list[dict[str, Any]], tracing: Tracing | None = None) -> EdgeMiddleware:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        span = child_span("inner")
        if span is not None:
            span.end()
        seen.append({"shadow": context.get(context.SHADOW), "out": propagation_headers()})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return EdgeMiddleware(app, trust=KeyTrust(), tracing=tracing)


async def call(app: EdgeMiddleware, **headers: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return (await client.get("/x", headers=headers)).status_code


def test_baggage_member_is_read_and_rewritten() -> None:
    assert contract.baggage_dyed("a=1, traffic = shadow;p=q")
    assert not contract.baggage_dyed("a=1,traffic=live") and not contract.baggage_dyed(None)
    assert contract.baggage_with_dye("a=1,traffic=shadow", False) == "a=1"
    assert contract.baggage_with_dye("a=1", True) == "a=1,traffic=shadow"
    assert contract.baggage_with_dye(None, False) is None


async def test_edge_honours_the_baggage_dye_only_from_callers_that_may_dye() -> None:
    seen: list[dict[str, Any]] = []
    app = edge_app(seen)
    baggage = "tenant=a,traffic=shadow"
    assert await call(app, authorization="Bearer load", baggage=baggage) == 200
    assert await call(app, authorization="Bearer plain", baggage=baggage) == 200
    trusted, untrusted = seen
    assert trusted["shadow"] is True
    assert trusted["out"]["baggage"] == baggage and trusted["out"]["X-Shadow-Traffic"] == "1"
    # Ignored (baggage is public), and the member does not travel on.
    assert untrusted["shadow"] is False
    assert untrusted["out"]["baggage"] == "tenant=a" and "X-Shadow-Traffic" not in untrusted["out"]


async def test_spans_of_dyed_requests_carry_the_traffic_attribute() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing("t", "1", exporters=[exporter], sampler=ALWAYS_ON)
    tracing.start()
    app = edge_app([], tracing)
    await call(app, authorization="Bearer load", **{"X-Shadow-Traffic": "1"})
    await call(app, authorization="Bearer plain")
    tracing.shutdown()
    marks = sorted(
        (s.name, (s.attributes or {}).get("traffic", "-")) for s in exporter.get_finished_spans()
    )
    assert marks == [
        ("GET unmatched", "-"),
        ("GET unmatched", "shadow"),
        ("inner", "-"),
        ("inner", "shadow"),
    ]


def test_log_lines_of_dyed_requests_carry_traffic() -> None:
    formatter = JsonFormatter("t", "1")
    record = logging.LogRecord("x", logging.INFO, "", 0, "hello", None, None)
    with context.request_scope({context.SHADOW: True}):
        dyed = json.loads(formatter.format(record))
    with context.request_scope({context.SHADOW: False}):
        live = json.loads(formatter.format(record))
    assert dyed["traffic"] == "shadow" and "traffic" not in live
