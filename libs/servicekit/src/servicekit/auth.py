"""Service credential: internal services answer only calls that carry it.

The credential travels in `X-Service-Token` and is compared in constant time. Health and
metrics paths stay open for probes and Prometheus. A credentialed call may name the customer
it acts for in `X-Customer-ID` (set by the gateway from the API key, never by the public).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit import context
from servicekit.errors import problem_body

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_CUSTOMER = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def token_matches(presented: str | None, accepted: Iterable[str]) -> bool:
    """Constant-time comparison against every accepted token (no early exit)."""
    if not presented:
        return False
    given = presented.encode()
    ok = False
    for token in accepted:
        ok |= hmac.compare_digest(given, token.encode())
    return ok


class ServiceAuthMiddleware:
    """Pure ASGI: 401 problem for any call without the service credential."""

    def __init__(
        self, app: ASGIApp, *, tokens: Iterable[str], open_paths: Iterable[str] = OPEN_PATHS
    ) -> None:
        self.app = app
        self.tokens = tuple(t for t in tokens if t)
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = customer = None
        for key, value in scope["headers"]:
            if key == b"x-service-token":
                token = value.decode("latin-1")
            elif key == b"x-customer-id":
                customer = value.decode("latin-1")
        if not token_matches(token, self.tokens):
            body = problem_body(
                401,
                "this service requires the service credential (X-Service-Token)",
                slug="unauthorized",
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'ServiceToken realm="internal"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if customer is not None and _CUSTOMER.match(customer):
            context.set_value(context.CUSTOMER_ID, customer)
        await self.app(scope, receive, send)
