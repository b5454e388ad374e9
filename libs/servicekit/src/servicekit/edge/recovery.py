"""Recovery: an escaped exception never kills the worker (run by the kit's edge layer).

Behaves like starlette's `ServerErrorMiddleware`: it answers only if the response has not
started. Before that, any exception becomes a 500 `application/problem+json` carrying
`request_id` and `trace_id`, logged once with its stack and counted. After the response has
started nothing correct can be sent, so the error is re-raised for the server, which closes
the connection (and logs it, once). Either way the exception is recorded on the server span
(once; a no-op when the request is unsampled), which is current here: the edge layer opened
it.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from prometheus_client import Counter
from starlette.types import Scope, Send

from servicekit.errors import problem_body, send_problem
from servicekit.telemetry.tracing import fail

logger = logging.getLogger("servicekit.edge.recovery")


async def recover(
    exc: Exception, scope: Scope, send: Send, *, started: bool, counter: Counter | None
) -> None:
    """Handle `exc`, escaped from the app: record, count, then answer 500 or re-raise.

    `send` must be the edge's own (it adds the request id and security headers), `started`
    whether the response has begun. Re-raises when it has: the server then closes the
    connection and logs the error, once.
    """
    fail(trace.get_current_span(), exc)
    if counter is not None:
        counter.labels(exception=type(exc).__name__).inc()
    if started:
        raise exc
    logger.exception(
        "unhandled %s on %s %s",
        type(exc).__name__,
        scope.get("method"),
        scope.get("path"),
        exc_info=exc,
    )
    body = problem_body(500, "An unexpected error occurred; it has been logged.", slug="internal")
    await send_problem(send, 500, body)
