"""The outbound side of one service: every `ServiceClient` it uses, built and closed together.

Each client of a service sends the same credential and caller name, reports to the same
metrics and is guarded by a breaker from the same registry (`Breakers`: config, webhook and
shared state from `<PREFIX>_BREAKER_*`). Use in a lifespan::

    downstreams = Downstreams(settings, metrics=app.state.metrics)
    payment = downstreams.client("payment", settings.payment_url)
    await downstreams.start()
    try:
        yield {...}
    finally:
        await downstreams.aclose()
"""

from __future__ import annotations

from typing import Any

import httpx

from servicekit.downstream.breaker_registry import Breakers
from servicekit.downstream.client import ServiceClient
from servicekit.settings import ServiceSettings
from servicekit.telemetry.metrics import Metrics


class Downstreams:
    """Builds a service's `ServiceClient`s, each with its breaker; closes them all at once."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.transport = transport
        self.breakers = Breakers.from_settings(settings, metrics=metrics)
        self._clients: list[ServiceClient] = []

    def client(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backpressure_trips_breaker: bool = True,
        **breaker_overrides: Any,
    ) -> ServiceClient:
        """A client of downstream `name` behind the breaker of the same name.

        `timeout` defaults to `<PREFIX>_HTTP_TIMEOUT`; `transport` to the one given to the
        registry (tests pass an `httpx.MockTransport`); `breaker_overrides` adjust this
        dependency's breaker config (`BreakerConfig` fields).
        """
        client = ServiceClient(
            name,
            base_url,
            token=self.settings.service_token.get_secret_value(),
            caller=self.settings.service_name,
            timeout=self.settings.http_timeout if timeout is None else timeout,
            transport=transport or self.transport,
            breaker=self.breakers.get(name, **breaker_overrides),
            backpressure_trips_breaker=backpressure_trips_breaker,
            metrics=self.metrics,
        )
        self._clients.append(client)
        return client

    async def start(self) -> None:
        """Start the breakers' background work (shared state, when stored in Redis)."""
        await self.breakers.start()

    async def aclose(self) -> None:
        """Close every client, then stop the breakers (flushing webhook notices)."""
        try:
            for client in self._clients:
                await client.aclose()
        finally:
            await self.breakers.aclose()
