"""Pure ASGI middleware for request context (ids, server span, access log) and body size.

Order (outermost first) is set in one place, `servicekit.app.create_service_app`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit import context
from servicekit.errors import PayloadTooLargeError, problem_body
from servicekit.logs import AccessLogPolicy, access_log
from servicekit.telemetry import Tracing, activate

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
#: Header a caller uses to pass its remaining time budget downstream.
DEADLINE_HEADER = "x-request-timeout-ms"


def new_span_id() -> str:
    """A random W3C span id (16 hex digits)."""
    return os.urandom(8).hex()


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace_id, parent span id, flags) from a valid W3C traceparent, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


#: Request headers the context middleware reads, collected in one pass over the headers.
_CONTEXT_HEADERS = frozenset(
    {b"x-request-id", b"traceparent", b"baggage", b"x-shadow-traffic", DEADLINE_HEADER.encode()}
)
_DEADLINE_KEY = DEADLINE_HEADER.encode()
_REQUEST_ID_HEADER = b"x-request-id"
#: Last hex digit of W3C trace-flags with the sampled bit (bit 0) set.
_SAMPLED = frozenset("13579bdf")
#: Probes and scrapes: no span, and their access line is logged at debug only.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Open the request context and its server span; write the access log line.

    - `X-Request-ID` is accepted when well-formed, else generated, and echoed on the response.
    - `traceparent` is continued: with tracing on, the server span is the child of the caller's
      span and its ids are the context's `TRACE_ID`/`SPAN_ID` (logs, problem bodies and spans
      agree); with tracing off (or before start) the ids are made here, the same way.
      `baggage` is carried as received (bounded).
    - `X-Shadow-Traffic` is trusted here only because the gateway strips it from callers that
      may not send it; services are reachable only with the service credential.
    - The access line (method, route, status, latency_ms) as `access_log` decides (default:
      every request; the app factory passes the settings' policy), at debug for probes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_timeout: float = 10.0,
        tracing: Tracing | None = None,
        access_log: AccessLogPolicy | None = None,
    ) -> None:
        self.app = app
        self.default_timeout = default_timeout
        self.tracing = tracing
        self.access_log = access_log or AccessLogPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        found: dict[bytes, str] = {}
        for key, value in scope["headers"]:
            if key in _CONTEXT_HEADERS:
                found[key] = value.decode("latin-1")
        # One system call for every id this request may need: request, trace, span.
        fresh = os.urandom(40).hex()
        request_id = found.get(_REQUEST_ID_HEADER)
        if request_id is None or not _REQUEST_ID.match(request_id):
            request_id = fresh[:32]
        parsed = parse_traceparent(found.get(b"traceparent"))
        quiet = scope["path"] in QUIET_PATHS
        tracer = None if quiet or self.tracing is None else self.tracing.tracer
        span: trace.Span | None = None
        traced: otel_context.Context | None = None
        if tracer is None:
            # Untraced here: a new trace is not sampled (nobody records it), a caller's
            # decision is passed on as it came.
            trace_id = parsed[0] if parsed else fresh[32:64]
            flags = parsed[2] if parsed else "00"
            span_id = fresh[64:]
        else:
            span = tracer.start_span(
                scope["method"], context=_remote_parent(parsed), kind=trace.SpanKind.SERVER
            )
            span_context = span.get_span_context()
            trace_id = f"{span_context.trace_id:032x}"
            span_id = f"{span_context.span_id:016x}"
            flags = "01" if span_context.trace_flags.sampled else "00"
            traced = activate(tracer, span)
        values: dict[context.Key[Any], Any] = {
            context.REQUEST_ID: request_id,
            context.TRACE_ID: trace_id,
            context.SPAN_ID: span_id,
            context.TRACEPARENT: f"00-{trace_id}-{span_id}-{flags}",
            context.SHADOW: found.get(b"x-shadow-traffic") == "1",
            context.DEADLINE: time.monotonic() + self._budget(found.get(_DEADLINE_KEY)),
        }
        baggage = found.get(b"baggage")
        if baggage and len(baggage) <= 8192:
            values[context.BAGGAGE] = baggage
        echoed = (_REQUEST_ID_HEADER, request_id.encode("latin-1"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = otel_context.attach(traced) if traced is not None else None
        with context.request_scope(values):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = _route_of(scope)
                if span is not None:
                    _end_server_span(span, scope, route, status)
                if token is not None:
                    otel_context.detach(token)
                latency_ms = round((time.perf_counter() - start) * 1000, 2)
                if quiet:
                    access_log(
                        scope["method"], route, scope["path"], status, latency_ms, quiet=True
                    )
                else:
                    line = self.access_log.decide(
                        status, latency_ms, trace_id, sampled_trace=flags[-1] in _SAMPLED
                    )
                    if line is not None:
                        level, sampled = line
                        access_log(
                            scope["method"],
                            route,
                            scope["path"],
                            status,
                            latency_ms,
                            level=level,
                            sampled=sampled,
                        )

    def _budget(self, raw: str | None) -> float:
        if raw is not None and raw.isdigit():
            return min(self.default_timeout, int(raw) / 1000)
        return self.default_timeout


def _remote_parent(parsed: tuple[str, str, str] | None) -> otel_context.Context | None:
    """The caller's span as the parent context of the server span (None: a new trace)."""
    if parsed is None:
        return None
    trace_id, parent_id, flags = parsed
    parent = trace.SpanContext(
        int(trace_id, 16),
        int(parent_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(flags, 16) & trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _end_server_span(span: trace.Span, scope: Scope, route: str, status: int) -> None:
    if span.is_recording():
        # Named after the route template (low cardinality), known only once routing is done.
        span.update_name(f"{scope['method']} {route}")
        span.set_attributes(
            {
                "http.request.method": scope["method"],
                "http.route": route,
                "url.path": scope["path"],
                "http.response.status_code": status,
            }
        )
        if status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        exceeded = False
        limit = self.max_bytes

        async def receive_capped() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Frameworks turn errors raised while parsing into their own 400, so the
                    # over-long stream is cut here and the 413 is written in send_capped.
                    exceeded = True
                    raise PayloadTooLargeError(f"request body over {limit} bytes")
            return message

        refused = False

        async def send_capped(message: Message) -> None:
            nonlocal refused
            if exceeded:
                if not refused:
                    refused = True
                    await self._refuse(send)
                return
            await send(message)

        try:
            await self.app(scope, receive_capped, send_capped)
        except PayloadTooLargeError:
            if refused:
                return
            refused = True
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = problem_body(
            413, f"request body over {self.max_bytes} bytes", slug="payload-too-large"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
