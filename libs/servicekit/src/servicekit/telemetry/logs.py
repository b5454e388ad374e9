"""JSON-lines logging: every line carries the service, its version and the request's ids.

One object per line on stdout (`make up` sends it to `.run/logs/<service>.log`)::

    {"ts": "2026-11-26T15:44:10.982Z", "level": "info", "logger": "servicekit.access",
     "message": "POST /api/orders 201 12.31ms", "service": "gateway", "version": "0.1.0",
     "request_id": "…", "trace_id": "…", "span_id": "…",
     "method": "POST", "route": "/api/orders", "path": "/api/orders", "status": 201,
     "latency_ms": 12.31}

`trace_id` and `span_id` are the server span's (telemetry.tracing), so a log line leads to
its trace. Lines of dyed (load-test) traffic add `"traffic": "shadow"`.
Fields passed with `extra=` become keys; an exception adds `exception` (its stack,
logged once: by recovery in the edge layer, or by the server when the response had started).
The access line is written by `EdgeMiddleware` (servicekit.edge) through `access_log`,
at most once per request, as `AccessLogPolicy` decides (errors and slow requests always, a
sample of the rest); probes (`/healthz`, `/readyz`, `/metrics`) only at debug.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from servicekit import context

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_ID_KEYS = (context.REQUEST_ID, context.TRACE_ID, context.SPAN_ID)
# One encoder for every line: `json.dumps(..., default=str)` would build a new one each call.
_ENCODER = json.JSONEncoder(default=str)

access_logger = logging.getLogger("servicekit.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the request context is added when there is one."""

    def __init__(self, service: str, version: str) -> None:
        super().__init__()
        self.service = service
        self.version = version
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        # strftime once per second, not once per line (called under the handler's lock).
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line (without the newline)."""
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": _LEVELS.get(record.levelno) or record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "version": self.version,
        }
        for key in _ID_KEYS:
            value = context.get(key)
            if value is not None:
                entry[key.name] = value
        if context.get(context.SHADOW):
            entry["traffic"] = "shadow"  # dyed traffic; live lines carry no field
        for name, value in record.__dict__.items():
            if name not in _RESERVED and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(entry)


#: Scope key a load-shedding tier sets on the requests it refuses (see `mark_shed`).
SHED_SCOPE_KEY = "servicekit.shed"


def mark_shed(scope: MutableMapping[str, Any]) -> None:
    """Mark the request as refused by load shedding: its access line is sampled (`decide`)."""
    scope[SHED_SCOPE_KEY] = True


#: Level of the access line of a server error (its stack, if any, is logged by recovery).
SERVER_ERROR_LEVEL = logging.WARNING


class AccessLogPolicy:
    """Which requests get an access line, and at which level (settings `access_log_*`).

    Always written: server errors (5xx, at warning: the stack, if any, is logged apart by
    recovery), client errors (4xx, info), requests slower than `slow_ms`, and requests whose
    trace is sampled (a kept trace always has its line). Of the other requests, the share
    `sample`, chosen by the trace id's low 64 bits like OpenTelemetry's ratio sampler: the
    same request is logged on every hop or on none, and with `sample` at most the trace ratio
    each such line has its trace. Probes and scrapes are written at debug only, as before.
    """

    __slots__ = ("_below", "_every", "sample", "slow_ms")

    def __init__(self, *, sample: float = 1.0, slow_ms: float = 500.0) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError("sample must be within 0..1")
        self.sample = sample
        self.slow_ms = slow_ms
        self._every = sample >= 1.0
        # The sampling key, the trace id's low 64 bits, compared as 16 lowercase hex digits:
        # for strings of equal length that is the numeric order, without parsing a number on
        # every request. Every trace id the kit holds is lowercase (servicekit.edge).
        self._below = f"{min(round(sample * (1 << 64)), (1 << 64) - 1):016x}"

    def decide(
        self,
        status: int,
        latency_ms: float,
        trace_id: str,
        sampled_trace: bool,
        shed: bool = False,
    ) -> tuple[int, float | None] | None:
        """(level, sample share or None) of the request's line, or None for no line.

        `shed`: the answer is a load-shedding refusal (`mark_shed`). Those come by the thousand
        per second exactly when the process is overloaded, and are counted by reason in
        `servicekit_shed_requests_total`; so they are sampled like successes, never all written.
        """
        if shed or (status < 400 and latency_ms < self.slow_ms):  # a routine answer
            if sampled_trace or self._every:
                return logging.INFO, None
            if trace_id[16:] < self._below:
                return logging.INFO, self.sample
            return None
        return (SERVER_ERROR_LEVEL if status >= 500 else logging.INFO), None


def access_log(
    method: str,
    route: str,
    path: str,
    status: int,
    latency_ms: float,
    *,
    quiet: bool = False,
    level: int = logging.INFO,
    sampled: float | None = None,
) -> None:
    """Write the access line of one request (at debug when `quiet`: probes and scrapes).

    `sampled`: the share of such requests that are logged, when the line is one of a sample.
    """
    if quiet:
        level = logging.DEBUG
    if not access_logger.isEnabledFor(level):
        return
    extra: dict[str, Any] = {
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "latency_ms": latency_ms,
    }
    if sampled is not None:
        extra["sampled"] = sampled
    # makeRecord + handle instead of .log(): the caller is known, so logging's stack walk
    # (findCaller) is skipped.
    record = access_logger.makeRecord(
        access_logger.name,
        level,
        __file__,
        0,
        "%s %s %s %sms",
        (method, route, status, latency_ms),
        None,
        extra=extra,
    )
    access_logger.handle(record)


def configure_logging(service: str, *, version: str = "0.1.0", level: str = "INFO") -> None:
    """Send every log record (uvicorn's included) to stdout as JSON lines."""
    # A JSON line has no caller, thread or process fields: skip collecting them for every
    # record (the logging HOWTO's "Optimization" section names these switches).
    logging._srcfile = None  # no sys._getframe walk to find the caller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service, version))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every request at INFO: far too much under load.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The access line is written by EdgeMiddleware; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
