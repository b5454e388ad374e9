"""Tracing: server and client spans whose ids agree with the context, logs and problem bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import servicekit as kit
from fastapi import APIRouter, FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBasedTraceIdRatio
from pydantic_settings import SettingsConfigDict
from servicekit import context
from servicekit.telemetry.tracing import (
    JsonLinesSpanExporter,
    LineBatchProcessor,
    Tracing,
    exporters_from_env,
    sampler_from_env,
    statement_summary,
)
from servicekit.testing import lifespan_client

from .conftest import TOKEN, build_demo_app

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def traces_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tracing on for apps built in the test: every span lands in this file."""
    path = tmp_path / "spans.jsonl"
    for prefix in ("DEMO", "CALLER"):
        monkeypatch.setenv(f"{prefix}_TRACES_FILE", str(path))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return path


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans the app exported (the lifespan has flushed them on exit)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def log_entries(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_server_span_continues_the_callers_trace_and_ids_agree_everywhere(
    traces_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        response = await client.get("/boom", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    (span,) = read_spans(traces_file)
    assert span["trace_id"] == TRACE and span["parent_span_id"] == PARENT
    assert span["kind"] == "SERVER" and span["service"] == "demo"
    assert span["name"] == "GET /boom"
    assert span["attributes"]["http.response.status_code"] == 500
    assert span["status"] == "ERROR"
    # The exception is recorded on the span once; recovery logs it once.
    assert [e["name"] for e in span["events"]] == ["exception"]
    assert response.json()["trace_id"] == TRACE
    entries = [e for e in log_entries(capsys.readouterr().out) if e.get("trace_id") == TRACE]
    assert {e["logger"] for e in entries} == {"servicekit.edge.recovery", "servicekit.access"}
    assert all(e["span_id"] == span["span_id"] for e in entries)
    assert sum("exception" in e for e in entries) == 1


async def test_new_trace_gets_a_root_span_named_after_the_route(traces_file: Path) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        response = await client.post("/items", json={"name": "a", "quantity": 1})
    assert response.status_code == 201
    (span,) = read_spans(traces_file)
    assert span["parent_span_id"] is None
    assert span["name"] == "POST /items" and span["status"] == "UNSET"
    assert span["attributes"]["http.route"] == "/items"


async def test_unsampled_request_keeps_its_trace_id_and_exports_nothing(
    traces_file: Path,
) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        response = await client.get("/conflict", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert response.status_code == 503 and response.json()["trace_id"] == TRACE
    assert read_spans(traces_file) == []


async def test_probes_get_no_span(traces_file: Path) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        await client.get("/whoami")
    assert [s["name"] for s in read_spans(traces_file)] == ["GET /whoami"]


def build_caller_app(transport: httpx.AsyncBaseTransport) -> FastAPI:
    """An app whose route calls a downstream through a ServiceClient."""

    class CallerSettings(kit.ServiceSettings):
        service_name: ClassVar[str] = "caller"
        model_config = SettingsConfigDict(env_prefix="CALLER_", extra="ignore")

    router = APIRouter()

    @router.get("/call")
    async def read_call() -> dict[str, Any]:
        upstream = await client.request("GET", "/stock")
        return {"status": upstream.status_code}

    client = kit.ServiceClient("inventory", "http://inventory", token="t", transport=transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}
        await client.aclose()

    return kit.create_service_app(
        CallerSettings(), title="caller", lifespan=lifespan, routers=[router], internal=False
    )


@pytest.mark.parametrize("sampled", [True, False])
async def test_outbound_traceparent_names_the_client_span(traces_file: Path, sampled: bool) -> None:
    sent: list[httpx.Request] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    app = build_caller_app(httpx.MockTransport(downstream))
    flags = "01" if sampled else "00"
    async with lifespan_client(app) as client:
        await client.get("/call", headers={"traceparent": f"00-{TRACE}-{PARENT}-{flags}"})
    version, trace_id, parent_id, sent_flags = sent[0].headers["traceparent"].split("-")
    assert (version, trace_id, sent_flags) == ("00", TRACE, flags)
    spans = {s["kind"]: s for s in read_spans(traces_file)}
    if not sampled:
        assert spans == {}
        return
    server, client_span = spans["SERVER"], spans["CLIENT"]
    assert client_span["span_id"] == parent_id
    assert client_span["parent_span_id"] == server["span_id"]
    assert client_span["name"] == "GET inventory"
    assert client_span["attributes"]["http.response.status_code"] == 200


async def test_no_tracer_when_the_sdk_is_disabled_and_ids_still_flow(
    traces_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        assert app.state.tracing.tracer is None
        response = await client.get("/conflict", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert response.json()["trace_id"] == TRACE
    assert read_spans(traces_file) == []


async def test_tracer_lives_only_inside_the_lifespan(traces_file: Path) -> None:
    app = build_demo_app()
    assert app.state.tracing.tracer is None  # nothing is built by the factory
    async with lifespan_client(app, headers=TOKEN):
        assert app.state.tracing.tracer is not None
    assert app.state.tracing.tracer is None


def test_untraced_propagation_passes_the_callers_sampling_decision_on() -> None:
    for flags in ("00", "01"):
        values = {context.TRACE_ID: TRACE, context.TRACE_FLAGS: flags}
        with context.request_scope(values):  # type: ignore[arg-type]
            header = kit.propagation_headers()["traceparent"]
        assert header.startswith(f"00-{TRACE}-") and header.endswith(f"-{flags}")


@pytest.mark.parametrize(
    ("name", "arg", "description"),
    [
        ("", "", "ParentBased{root:TraceIdRatioBased{0.1}"),
        ("", "0.5", "ParentBased{root:TraceIdRatioBased{0.5}"),
        ("parentbased_traceidratio", "", "ParentBased{root:TraceIdRatioBased{1.0}"),
        ("always_on", "", "AlwaysOnSampler"),
        ("parentbased_always_off", "", "ParentBased{root:AlwaysOffSampler"),
        ("traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
    ],
)
def test_sampler_comes_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, name: str, arg: str, description: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    assert sampler_from_env().get_description().startswith(description)


def test_unknown_sampler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        sampler_from_env()


def test_exporters_follow_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert exporters_from_env() == []
    (local,) = exporters_from_env(tmp_path / "s.jsonl")
    assert isinstance(local, JsonLinesSpanExporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    (otlp,) = exporters_from_env()
    assert isinstance(otlp, OTLPSpanExporter)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporters_from_env() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        exporters_from_env()


def test_no_exporter_means_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    tracing = Tracing("svc", "1.0", exporters=[])
    tracing.start()
    assert tracing.tracer is None


def test_resource_names_service_version_and_instance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ignored")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,team=shop")
    tracing = Tracing("order", "2.1.0", exporters=[JsonLinesSpanExporter(tmp_path / "s.jsonl")])
    tracing.start()
    assert tracing.provider is not None
    attributes = tracing.provider.resource.attributes
    tracing.shutdown()
    assert attributes["service.name"] == "order"
    assert attributes["service.version"] == "2.1.0"
    assert attributes["service.instance.id"] == "pod-7"
    assert attributes["team"] == "shop"


@pytest.mark.parametrize(
    ("statement", "summary"),
    [
        ("SELECT product.sku, product.name FROM product WHERE sku = $1", ("SELECT", "product")),
        ('INSERT INTO "order_item" (a, b) VALUES (?, ?)', ("INSERT", "order_item")),
        ("UPDATE product SET reserved = reserved + 1", ("UPDATE", "product")),
        ("select 1", ("SELECT", None)),
    ],
)
def test_statement_summary_is_operation_and_table(
    statement: str, summary: tuple[str, str | None]
) -> None:
    assert statement_summary(statement) == summary


def test_span_lines_are_encoded_when_spans_end_and_written_in_order(tmp_path: Path) -> None:
    exporter = JsonLinesSpanExporter(tmp_path / "s.jsonl")
    tracing = Tracing("svc", "1", exporters=[exporter], sampler=ParentBasedTraceIdRatio(0.5))
    tracing.start()
    assert tracing.tracer is not None and tracing.provider is not None
    sampled = 0
    for i in range(200):
        span = tracing.tracer.start_span(f"op {i}")
        sampled += span.get_span_context().trace_flags.sampled
        span.end()
    (processor,) = [
        p
        for p in tracing.provider._active_span_processor._span_processors
        if isinstance(p, LineBatchProcessor)
    ]
    # Encoded at end: the processor holds strings, never the span objects.
    assert len(processor._lines) == sampled and all(isinstance(x, str) for x in processor._lines)
    tracing.shutdown()
    names = [s["name"] for s in read_spans(tmp_path / "s.jsonl")]
    assert 0 < sampled < 200 and len(names) == sampled
    assert names == sorted(names, key=lambda name: int(name.split()[1]))


def test_span_lines_past_the_queue_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    exporter = JsonLinesSpanExporter(tmp_path / "s.jsonl")
    tracing = Tracing("svc", "1", exporters=[exporter], sampler=ALWAYS_ON)
    tracing.start()
    assert tracing.tracer is not None
    for i in range(5):
        tracing.tracer.start_span(f"op {i}").end()
    tracing.shutdown()
    assert [s["name"] for s in read_spans(tmp_path / "s.jsonl")] == ["op 0", "op 1", "op 2"]
    assert "2 spans dropped" in caplog.text
