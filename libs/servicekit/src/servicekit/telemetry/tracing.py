"""Tracing: OpenTelemetry spans for every hop, set up in the lifespan, cheap when unsampled.

`Tracing` is made by the app factory and started by the kit's lifespan (nothing happens at
import). It reads only the standard variables:

- `OTEL_SDK_DISABLED=true`: no tracer at all; the kit still makes and propagates trace ids.
- `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: the standard sampler names. Unset, the kit
  samples `parentbased_traceidratio` at `DEFAULT_RATIO` (a caller's sampled flag is obeyed, so
  one sampled checkout is traced on every hop).
- `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`, comma-separated): unset, OTLP/HTTP is used
  when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. The OTLP exporter reads
  its own `OTEL_EXPORTER_OTLP_*` variables. A service's `<P>_TRACES_FILE` (set by `make up`)
  adds a JSON-lines file that `python -m servicekit.telemetry.waterfall` prints as a waterfall.
- `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: how
  often spans are written, and how many may wait (the local file's writer reads them too).

No exporter means no tracer. Spans are made by the kit's own pure-ASGI code (server span in
`EdgeMiddleware`, client span in `TracingTransport`, database spans from SQLAlchemy
cursor events, Redis spans in `servicekit.data.redis`); an unsampled request gets ids and a
propagated `traceparent`, and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
import weakref
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit import context
from servicekit.contract import TRACEPARENT

_TRACEPARENT = TRACEPARENT.name

logger = logging.getLogger("servicekit.telemetry.tracing")

#: Root sampling ratio when `OTEL_TRACES_SAMPLER` is unset (`make up` samples everything).
DEFAULT_RATIO = 0.1
#: Where the request's tracer travels, beside its span, in the OpenTelemetry context.
_TRACER_KEY = otel_context.create_key("servicekit-tracer")


def sampler_from_env() -> Sampler:
    """The sampler named by `OTEL_TRACES_SAMPLER` / `_ARG`; the kit's default when unset."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    raw_arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = min(1.0, max(0.0, float(raw_arg))) if raw_arg else None
    except ValueError:
        logger.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; ignored", raw_arg)
        ratio = None
    if not name:
        return ParentBasedTraceIdRatio(DEFAULT_RATIO if ratio is None else ratio)
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(1.0 if ratio is None else ratio),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBasedTraceIdRatio(1.0 if ratio is None else ratio),
    }
    if name not in samplers:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {', '.join(samplers)}")
    return samplers[name]


def exporters_from_env(traces_file: str | Path | None = None) -> list[SpanExporter]:
    """The exporters `OTEL_TRACES_EXPORTER` asks for, plus the local file when given."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            # Imported here: the OTLP stack (protobuf, requests) loads only when it is used.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console)")
    if traces_file:
        exporters.append(JsonLinesSpanExporter(traces_file))
    return exporters


# Enum `.name` is a descriptor call; these lookups are plain dict reads.
_KIND_NAMES = {kind: kind.name for kind in SpanKind}
_STATUS_NAMES = {code: code.name for code in StatusCode}
#: One C-accelerated encoder for every line (`json.dumps(default=...)` builds one per call).
_LINE_ENCODER = json.JSONEncoder(default=str)


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a flat JSON-able dict (the local trace file's line format)."""
    context = span.get_span_context()
    parent = span.parent
    assert context is not None
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "kind": _KIND_NAMES[span.kind],
        "service": span.resource.attributes.get("service.name"),
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": _STATUS_NAMES[span.status.status_code],
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    }


def span_line(span: ReadableSpan) -> str:
    """`span` as one line of the local trace file, newline included."""
    return _LINE_ENCODER.encode(span_to_dict(span)) + "\n"


class JsonLinesSpanExporter(SpanExporter):
    """Append finished spans to a file, one JSON object per line (local mode, no backend).

    `Tracing` gives it a `LineBatchProcessor`, not the SDK's batch processor: the lines are
    encoded as the spans end and only `write` runs on a thread (see `LineBatchProcessor`).
    As a plain `SpanExporter` (any processor) it encodes and writes a batch in `export`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write `spans`; a failed write is reported, never raised into the processor."""
        return self.write("".join(map(span_line, spans)))

    def write(self, lines: str) -> SpanExportResult:
        """Append encoded `lines` in one `write` (the GIL is released while it runs)."""
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(lines)
        except OSError:
            logger.exception("could not write spans to %s", self.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        logger.warning("%s=%r is not an integer; %d used", name, raw, default)
        return default
    return value if value > 0 else default


class LineBatchProcessor(SpanProcessor):
    """Sends sampled spans to a `JsonLinesSpanExporter`: encoded as they end, written in batches.

    The SDK's `BatchSpanProcessor` keeps every span object until its thread encodes the whole
    batch. That thread then holds the GIL for milliseconds at a time, and the event loop,
    which needs the GIL back after every `epoll` wait, waits up to the interpreter's switch
    interval (5 ms) each time: every request in flight during an export gets slower, not
    only the sampled ones. The queued span objects also survive into the older GC
    generations, so full collections come more often. Here each span becomes its line
    (a string, which the GC does not track) on the thread that ends it, a few microseconds
    spread over the sampled requests; the writer thread only joins the lines and writes,
    and `write` runs without the GIL. Lines wait at most `OTEL_BSP_SCHEDULE_DELAY` ms
    (5000), or until `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512) are waiting; past
    `OTEL_BSP_MAX_QUEUE_SIZE` (2048) new lines are dropped, counted and logged, as the SDK does.
    """

    def __init__(self, exporter: JsonLinesSpanExporter) -> None:
        self.exporter = exporter
        self.delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = min(self.max_queue, _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        self._lines: list[str] = []
        self._dropped = 0
        self._lock = threading.Lock()  # guards _lines and _dropped
        self._write_lock = threading.Lock()  # one writer at a time: batches stay in order
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="servicekit-span-lines", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the line of a sampled span (never raises into the code that ended it)."""
        if self._stopping or not span.context.trace_flags.sampled:
            return
        try:
            line = span_line(span)
        except Exception:  # a span must never break the request that ended it
            logger.exception("could not encode span %r", span.name)
            return
        with self._lock:
            if len(self._lines) >= self.max_queue:
                self._dropped += 1
                return
            self._lines.append(line)
            full = len(self._lines) >= self.batch
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.delay)
            self._wake.clear()
            self._write()

    def _write(self) -> bool:
        with self._write_lock:
            with self._lock:
                lines, self._lines = self._lines, []
                dropped, self._dropped = self._dropped, 0
            if dropped:
                logger.warning("span queue full: %d spans dropped", dropped)
            if not lines:
                return True
            return self.exporter.write("".join(lines)) is SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write every queued line now, on the caller's thread."""
        return self._write()

    def shutdown(self) -> None:
        """Stop the writer thread, then write what is left."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._write()


#: Span attribute of dyed traffic (`traffic=shadow`); live spans do not carry it.
TRAFFIC_ATTRIBUTE = "traffic"


class TrafficSpans(SpanProcessor):
    """Marks every span started for dyed traffic with `traffic=shadow` (client and SQL spans).

    The server span is marked by the edge when it ends: it starts before trust is decided.
    """

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Add the attribute when the request (or job pass) is dyed."""
        if context.get(context.SHADOW):
            span.set_attribute(TRAFFIC_ATTRIBUTE, "shadow")


class Tracing:
    """The tracer of one service: built by `start()` in the lifespan, flushed by `shutdown()`.

    `tracer` is None before start, after shutdown, and when tracing is off (no exporter, or
    `OTEL_SDK_DISABLED=true`); the middleware then keeps its own ids, at no cost.
    """

    def __init__(
        self,
        service: str,
        version: str,
        *,
        traces_file: str | Path | None = None,
        exporters: Sequence[SpanExporter] | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.service = service
        self.version = version
        self.traces_file = traces_file
        self._exporters = exporters
        self._sampler = sampler
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None

    def start(self) -> None:
        """Read the `OTEL_*` variables and build the provider (once; later calls do nothing)."""
        if self.provider is not None:
            return
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return
        exporters = (
            list(self._exporters)
            if self._exporters is not None
            else exporters_from_env(self.traces_file)
        )
        if not exporters:
            return
        detected = OTELResourceDetector().detect().attributes
        resource = Resource.create(
            {
                # Named by the kit, not OTEL_SERVICE_NAME: local services share one environment.
                "service.name": self.service,
                "service.version": self.version,
                "service.instance.id": str(detected.get("service.instance.id") or uuid.uuid4()),
            }
        )
        provider = TracerProvider(
            sampler=self._sampler or sampler_from_env(),
            resource=resource,
            shutdown_on_exit=False,  # the lifespan flushes; atexit would keep every app alive
        )
        provider.add_span_processor(TrafficSpans())
        for exporter in exporters:
            provider.add_span_processor(
                LineBatchProcessor(exporter)
                if isinstance(exporter, JsonLinesSpanExporter)
                else BatchSpanProcessor(exporter)
            )
        self.provider = provider
        self.tracer = provider.get_tracer("servicekit", self.version)

    def shutdown(self) -> None:
        """Export what is queued, then stop (blocking: call it off the loop, at exit)."""
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is not None:
            provider.shutdown()


def activate(tracer: Tracer, span: trace.Span) -> otel_context.Context:
    """A context in which `span` is current and `tracer` makes the child spans."""
    return otel_context.set_value(_TRACER_KEY, tracer, trace.set_span_in_context(span))


def current_tracer() -> Tracer | None:
    """The tracer of the request being served, when tracing is on (else None)."""
    tracer = otel_context.get_value(_TRACER_KEY)
    return tracer if isinstance(tracer, Tracer) else None


def child_span(name: str, kind: SpanKind = SpanKind.INTERNAL) -> trace.Span | None:
    """A span under the current one, or None when unsampled or untraced (cheap to ask)."""
    tracer = current_tracer()
    if tracer is None or not trace.get_current_span().is_recording():
        return None
    return tracer.start_span(name, kind=kind)


def fail(span: trace.Span, exc: BaseException) -> None:
    """Record `exc` on `span` (the one place a span gets an exception) and mark it an error."""
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def traceparent(span: trace.Span) -> str:
    """The W3C `traceparent` naming `span` as the parent of the next hop."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 1:02x}"


class TracingTransport(httpx.AsyncBaseTransport):
    """An httpx transport making one client span per attempt; `traceparent` names that span.

    The span ends when the response headers arrive (bodies between services are small).
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, *, peer: str) -> None:
        self.inner = inner
        self.peer = peer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` under a client span (or as it is, when the request is untraced)."""
        tracer = current_tracer()
        if tracer is None:
            return await self.inner.handle_async_request(request)
        span = tracer.start_span(f"{request.method} {self.peer}", kind=SpanKind.CLIENT)
        # Unsampled too: the next hop logs the same trace id and keeps the decision.
        request.headers[_TRACEPARENT] = traceparent(span)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            fail(span, exc)
            span.end()
            raise
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "server.address": request.url.host,
                    "server.port": request.url.port or 80,
                    "url.path": request.url.path,
                    "peer.service": self.peer,
                    "http.response.status_code": response.status_code,
                }
            )
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


_SQL_TARGET = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?([A-Za-z_][\w.]*)"?', re.IGNORECASE)


@lru_cache(maxsize=512)
def statement_summary(statement: str) -> tuple[str, str | None]:
    """(operation, first table) of a SQL statement: `SELECT products`, never its parameters."""
    words = statement.split(None, 1)
    operation = words[0].upper() if words else "SQL"
    target = _SQL_TARGET.search(statement)
    return operation, target.group(1) if target else None


_traced_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def trace_queries(engine: AsyncEngine) -> None:
    """Add a span per statement run on `engine`, when the request is sampled.

    SQLAlchemy's cursor events run on the request's context (its greenlet inherits it), so
    the span nests under the server span. Only the operation and table are recorded.
    """
    sync_engine = engine.sync_engine
    if sync_engine in _traced_engines:
        return
    _traced_engines.add(sync_engine)
    system = engine.dialect.name

    def before(_conn: Any, _cursor: Any, statement: str, _p: Any, ctx: Any, _many: bool) -> None:
        operation, table = statement_summary(statement)
        name = f"{operation} {table}" if table else operation
        span = child_span(name, SpanKind.CLIENT)
        if span is None:
            return
        span.set_attributes(
            {"db.system.name": system, "db.operation.name": operation, "db.query.summary": name}
        )
        if table:
            span.set_attribute("db.collection.name", table)
        ctx._servicekit_span = span

    def after(_conn: Any, _cursor: Any, _s: str, _p: Any, ctx: Any, _many: bool) -> None:
        span = getattr(ctx, "_servicekit_span", None)
        if span is not None:
            ctx._servicekit_span = None
            span.end()

    def failed(exception_context: Any) -> None:
        ctx = exception_context.execution_context
        span = getattr(ctx, "_servicekit_span", None) if ctx is not None else None
        if span is not None:
            ctx._servicekit_span = None
            fail(span, exception_context.original_exception)
            span.end()

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", failed)
