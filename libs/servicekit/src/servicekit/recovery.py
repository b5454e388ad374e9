"""Recovery: the outermost middleware; an escaped exception never kills the worker.

Behaves like starlette's `ServerErrorMiddleware`: it answers only if the response has not
started. Before that, any exception becomes a 500 `application/problem+json` carrying
`request_id` and `trace_id`, logged once with its stack and counted. After the response has
started nothing correct can be sent, so the error is re-raised for the server, which closes
the connection (and logs it, once). Either way the exception is recorded on the server span
(once; a no-op when the request is unsampled), which is current here: the context middleware
outside opened it.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.errors import problem_body
from servicekit.telemetry import fail

logger = logging.getLogger("servicekit.recovery")


class RecoveryMiddleware:
    """Pure ASGI: turn any escaped exception into a clean 500 problem response."""

    def __init__(self, app: ASGIApp, *, counter: Counter | None = None) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False

        async def send_tracking(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            fail(trace.get_current_span(), exc)
            if self.counter is not None:
                self.counter.labels(exception=type(exc).__name__).inc()
            if response_started:
                raise
            logger.exception(
                "unhandled %s on %s %s", type(exc).__name__, scope.get("method"), scope.get("path")
            )
            body = problem_body(
                500, "An unexpected error occurred; it has been logged.", slug="internal"
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
