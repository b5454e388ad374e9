"""The kit's edge layer: the pure-ASGI layer every request meets first.

Order (outermost first) is set in one place, `servicekit.app.create_service_app`.
"""

from __future__ import annotations

import random
import time
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit import context, contract
from servicekit.contract import ANONYMOUS, CALLER, Caller, Trust, parse_traceparent
from servicekit.edge.recovery import recover
from servicekit.edge.security import SecurityHeaders
from servicekit.errors import ForbiddenError, ServiceError
from servicekit.telemetry.logs import SHED_SCOPE_KEY, AccessLogPolicy, access_log
from servicekit.telemetry.metrics import Metrics, RequestMetrics
from servicekit.telemetry.tracing import TRAFFIC_ATTRIBUTE, Tracing, activate


def new_span_id() -> str:
    """A random W3C span id (16 hex digits)."""
    return f"{random.getrandbits(64):016x}"


class UntrustedValueError(ForbiddenError):
    """A caller sent a value it may not set, and the contract refuses rather than drops it."""

    slug, title = "shadow-traffic-forbidden", "Shadow traffic not allowed"


#: Values only some callers may set (contract.INBOUND).
_RESTRICTED = tuple(hop for hop in contract.INBOUND if not hop.public)
_REQUEST_ID_HEADER = contract.REQUEST_ID.raw
_TRACEPARENT_HEADER = contract.TRACEPARENT.raw
_DEADLINE_HEADER = contract.DEADLINE.raw
_BAGGAGE_HEADER = contract.BAGGAGE.raw
_parse_request_id, _parse_baggage = contract.REQUEST_ID.parse, contract.BAGGAGE.parse
# Bound once: looked up on every request.
_perf_counter, _monotonic, _getrandbits = time.perf_counter, time.monotonic, random.getrandbits
_enter, _leave = context.enter, context.leave
#: Last hex digit of W3C trace-flags with the sampled bit (bit 0) set.
_SAMPLED = frozenset("13579bdf")
#: Probes and scrapes: no span, no caller, and their access line is logged at debug only.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class EdgeMiddleware:
    """The kit's outer layer: everything that must see every request and every answer.

    One pure-ASGI layer does, in this order:

    - **context**: `X-Request-ID` is accepted when well-formed, else generated, and echoed on
      the answer. `traceparent` is continued: with tracing on, the server span is the child of
      the caller's span and its ids are the context's `TRACE_ID`/`SPAN_ID` (logs, problem
      bodies and spans agree); with tracing off (or before start) the ids are made here, the
      same way. `baggage` is carried as received (bounded). `X-Request-Timeout-Ms` can only
      shorten the deadline (`<P>_REQUEST_TIMEOUT`).
    - **trust** (servicekit.contract): the app's `Trust` says who the caller is (a gateway API
      key and its scopes, a valid service credential) before anything counts or sheds the
      request; restricted values (priority, customer, the dye) are kept only when that
      caller may set them, and the dye from anyone else is refused with 403, counted as live
      traffic. A `Trust` may refuse the request itself (an internal service without its
      credential: 401). Probes and scrapes skip it.
    - **security headers** (servicekit.edge.security) on every answer, recovery's 500 included;
    - **recovery** (servicekit.edge.recovery): an exception escaping anything inside becomes a
      clean 500 problem, recorded on the span, counted and logged once;
    - **RED metrics** (telemetry.metrics.RequestMetrics) of every answer, refusals included;
    - **the access line** (method, route, status, latency_ms) as `access_log` decides, at
      debug for probes; the server span ends with the final status.

    One layer, one pass over the headers, one `send` wrapper: each layer costs a coroutine
    frame and a wrapper per request (docs/observability.md has the measurements).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        access_log: AccessLogPolicy | None = None,
        security: SecurityHeaders | None = None,
        trust: Trust | None = None,
        default_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.default_timeout = default_timeout
        self.trust = trust
        # Every header the edge needs, collected in its one pass: the contract's values and
        # whatever the trust reads (an API key, a credential).
        self.reads = frozenset(hop.raw for hop in contract.INBOUND) | (
            trust.reads if trust is not None else frozenset()
        )
        self.tracing = tracing
        self.access_log = access_log or AccessLogPolicy()
        self.security = security or SecurityHeaders()
        self.requests = RequestMetrics(metrics) if metrics is not None else None
        self.recovered = metrics.recovered_exceptions if metrics is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Per-request path, measured (benchmarks/b1_middleware.py): every call, attribute
        # lookup and temporary here is paid on every request of every service, so helpers
        # are inlined and what most requests do not need (parsing a traceparent, writing
        # an access line) is done only when there is something to do.
        start = _perf_counter()
        found: dict[bytes, str] = {}
        reads = self.reads
        for key, value in scope["headers"]:
            if key in reads:
                found[key] = value.decode("latin-1")
        # Every id this request may need at once: request, trace, span. Ids need to be unique,
        # not secret: the Mersenne Twister (reseeded in forked workers), as OpenTelemetry's
        # own id generator, at a third of the cost of os.urandom. Hex through bytes: format()
        # of a 320-bit int costs three times as much.
        fresh = _getrandbits(320).to_bytes(40, "big").hex()
        path: str = scope["path"]
        quiet = path in QUIET_PATHS
        raw_parent = found.get(_TRACEPARENT_HEADER) if found else None
        parsed = parse_traceparent(raw_parent) if raw_parent is not None else None
        tracing = self.tracing
        tracer = None if quiet or tracing is None else tracing.tracer
        span: trace.Span | None = None
        token: Token[otel_context.Context] | None = None
        if tracer is None:
            # Untraced here: a new trace is not sampled (nobody records it), a caller's
            # decision is passed on as it came.
            if parsed is None:
                trace_id, flags = fresh[32:64], "00"
            else:
                trace_id, _, flags = parsed
            span_id = fresh[64:]
        else:
            span = tracer.start_span(
                scope["method"], context=_remote_parent(parsed), kind=trace.SpanKind.SERVER
            )
            span_context = span.get_span_context()
            trace_id = f"{span_context.trace_id:032x}"
            span_id = f"{span_context.span_id:016x}"
            flags = "01" if span_context.trace_flags.sampled else "00"
            token = otel_context.attach(activate(tracer, span))
        sampled = flags[-1] in _SAMPLED
        budget = self.default_timeout
        request_id = None
        if found:
            raw_id = found.get(_REQUEST_ID_HEADER)
            if raw_id is not None:
                request_id = _parse_request_id(raw_id)
            raw_budget = found.get(_DEADLINE_HEADER)
            if raw_budget is not None and raw_budget.isdigit():
                budget = min(budget, int(raw_budget) / 1000)
        if request_id is None:
            request_id = fresh[:32]
        values: dict[context.Key[Any], Any] = {
            context.REQUEST_ID: request_id,
            context.TRACE_ID: trace_id,
            context.SPAN_ID: span_id,
            context.TRACE_FLAGS: flags,
            context.SHADOW: False,
            context.DEADLINE: _monotonic() + budget,
            CALLER: ANONYMOUS,
        }
        if found:
            baggage = found.get(_BAGGAGE_HEADER)
            if baggage is not None and _parse_baggage(baggage) is not None:
                values[context.BAGGAGE] = baggage
        echoed = (_REQUEST_ID_HEADER, request_id.encode("latin-1"))
        security = self.security.for_path(path)
        add_headers = self.security.add
        status = 0  # 0 until the response starts

        async def send_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = add_headers(message.get("headers", ()), echoed, security)
            await send(message)

        requests = self.requests
        if requests is not None:
            requests.in_flight += 1
        scope_token = _enter(values)
        shadow = False
        try:
            # Who the caller is, and which of its values hold, before anything inside counts
            # or sheds the request (the gateway's limits, admission); its refusal is live.
            refusal = self._trust(scope, found, values) if found or self.trust else None
            shadow = values[context.SHADOW]
            if refusal is None:
                await self.app(scope, receive, send_edge)
            else:
                await refusal.to_response()(scope, receive, send_edge)
        except Exception as exc:
            await recover(exc, scope, send_edge, started=status != 0, counter=self.recovered)
        finally:
            try:
                if status == 0:
                    status = 500  # nothing was sent: the server answers 500 or drops the line
                route = getattr(scope.get("route"), "path", None)
                if not isinstance(route, str):
                    route = "unmatched"
                if span is not None:
                    _end_server_span(span, scope, route, status, shadow)
                if token is not None:
                    otel_context.detach(token)
                seconds = _perf_counter() - start
                if requests is not None:
                    requests.in_flight -= 1
                    exemplar = trace_id if sampled else None
                    requests.observe(scope["method"], route, status, shadow, seconds, exemplar)
                if quiet:
                    access_log(
                        scope["method"], route, path, status, round(seconds * 1000, 2), quiet=True
                    )
                else:
                    line = self.access_log.decide(
                        status, seconds * 1000, trace_id, sampled, SHED_SCOPE_KEY in scope
                    )
                    if line is not None:
                        access_log(
                            scope["method"],
                            route,
                            path,
                            status,
                            round(seconds * 1000, 2),
                            level=line[0],
                            sampled=line[1],
                        )
            finally:
                _leave(scope_token)  # last: the access line carries the request's ids

    def _trust(
        self, scope: Scope, found: dict[bytes, str], values: dict[context.Key[Any], Any]
    ) -> ServiceError | None:
        """Set the caller and the restricted values it may set; the refusal, if any."""
        if scope["path"] in QUIET_PATHS:
            return None  # probes and scrapes: no caller, no restricted values
        caller: Caller = ANONYMOUS
        if self.trust is not None:
            try:
                caller = self.trust.identify(scope, found)
            except ServiceError as refusal:
                return refusal
            values[CALLER] = caller
            if caller.customer is not None:
                values[context.CUSTOMER_ID] = caller.customer
        for hop in _RESTRICTED:
            raw = found.get(hop.raw)
            if raw is None:
                continue
            if hop.allowed(caller.principals):
                value = hop.parse(raw)
                if value is not None and hop.key is not None:
                    values[hop.key] = value
            elif hop.refuse_untrusted:
                return UntrustedValueError(hop.refusal)
        # The dye's baggage member, under the header's rule; ignored from anyone else.
        if (
            not values[context.SHADOW]
            and contract.SHADOW.allowed(caller.principals)
            and contract.baggage_dyed(values.get(context.BAGGAGE))
        ):
            values[context.SHADOW] = True
        return None


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


def _end_server_span(span: trace.Span, scope: Scope, route: str, status: int, shadow: bool) -> None:
    if span.is_recording():
        if shadow:
            # Known only after trust; the spans started inside get it from TrafficSpans.
            span.set_attribute(TRAFFIC_ATTRIBUTE, "shadow")
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
