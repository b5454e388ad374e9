"""Outbound HTTP: one client per downstream service, made once, with explicit timeouts.

Every call carries the caller's `X-Request-ID`, a `traceparent` continuing the caller's trace,
`baggage`, the shadow flag, the remaining deadline and the service credential. A transport
failure or timeout becomes `UnavailableError` (503), never a 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx

from servicekit import context
from servicekit.errors import UnavailableError
from servicekit.middleware import DEADLINE_HEADER, new_span_id
from servicekit.once import Once

#: Header carrying the service credential between services (never from the public).
SERVICE_TOKEN_HEADER = "X-Service-Token"  # noqa: S105 (a header name, not a secret)
CUSTOMER_HEADER = "X-Customer-ID"


def propagation_headers() -> dict[str, str]:
    """Headers that carry the current request's identity and trace to the next hop."""
    headers: dict[str, str] = {}
    request_id = context.get(context.REQUEST_ID)
    if request_id:
        headers["X-Request-ID"] = request_id
    trace_id = context.get(context.TRACE_ID)
    if trace_id:
        headers["traceparent"] = f"00-{trace_id}-{new_span_id()}-01"
    baggage = context.get(context.BAGGAGE)
    if baggage:
        headers["baggage"] = baggage
    if context.get(context.SHADOW):
        headers["X-Shadow-Traffic"] = "1"
    return headers


class ServiceClient:
    """An httpx.AsyncClient for one downstream, created on first use through `Once`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        token: str,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._transport = transport
        self._max_connections = max_connections
        self._client: Once[httpx.AsyncClient] = Once(self._build, name=f"http:{name}")

    def _build(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout, connect=min(1.0, self.timeout)),
            limits=httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections // 2,
            ),
            transport=self._transport,
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; transport errors and timeouts raise `UnavailableError`."""
        budget = context.remaining(self.timeout)
        if budget <= 0:
            raise UnavailableError(f"deadline exceeded before calling {self.name}")
        merged = propagation_headers()
        if headers:
            merged.update(headers)
        # Set last: a caller's header can never replace the credential or widen the deadline.
        merged[SERVICE_TOKEN_HEADER] = self._token
        merged[DEADLINE_HEADER] = str(max(1, math.floor(budget * 1000)))
        client = self._client.get()
        try:
            return await client.request(
                method,
                path,
                json=json,
                content=content,
                params=params,
                headers=merged,
                timeout=httpx.Timeout(budget, connect=min(1.0, budget)),
            )
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"{self.name} timed out", retry_after=1) from exc
        except httpx.TransportError as exc:
            raise UnavailableError(f"{self.name} unavailable", retry_after=1) from exc

    async def aclose(self) -> None:
        """Close the pooled connections (lifespan exit); the next request would reopen them."""
        client = self._client.reset()
        if client is not None:
            await client.aclose()
