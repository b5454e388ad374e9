"""Pure ASGI middleware for request context and body size.

Order (outermost first) is set in one place, `servicekit.app.create_service_app`.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit import context
from servicekit.errors import PayloadTooLargeError, problem_body

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
#: Header a caller uses to pass its remaining time budget downstream.
DEADLINE_HEADER = "x-request-timeout-ms"


def new_span_id() -> str:
    """A random W3C span id (16 hex digits)."""
    return secrets.token_hex(8)


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


class RequestContextMiddleware:
    """Open the request context: request id, trace, baggage, shadow flag, deadline.

    `X-Request-ID` is accepted when well-formed, else generated, and echoed on the response.
    `X-Shadow-Traffic` is trusted here only because the gateway strips it from callers that may
    not send it; services are reachable only with the service credential.
    """

    def __init__(self, app: ASGIApp, *, default_timeout: float = 10.0) -> None:
        self.app = app
        self.default_timeout = default_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id")
        if request_id is None or not _REQUEST_ID.match(request_id):
            request_id = secrets.token_hex(16)
        parsed = parse_traceparent(_header(scope, b"traceparent"))
        trace_id = parsed[0] if parsed else secrets.token_hex(16)
        flags = parsed[2] if parsed else "01"
        span_id = new_span_id()
        values: dict[context.Key[Any], Any] = {
            context.REQUEST_ID: request_id,
            context.TRACE_ID: trace_id,
            context.SPAN_ID: span_id,
            context.TRACEPARENT: f"00-{trace_id}-{span_id}-{flags}",
            context.SHADOW: _header(scope, b"x-shadow-traffic") == "1",
            context.DEADLINE: time.monotonic() + self._budget(scope),
        }
        baggage = _header(scope, b"baggage")
        if baggage and len(baggage) <= 8192:
            values[context.BAGGAGE] = baggage
        echoed = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-request-id", echoed.decode())
            await send(message)

        with context.request_scope(values):
            await self.app(scope, receive, send_with_id)

    def _budget(self, scope: Scope) -> float:
        raw = _header(scope, DEADLINE_HEADER.encode())
        if raw is not None and raw.isdigit():
            return min(self.default_timeout, int(raw) / 1000)
        return self.default_timeout


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
