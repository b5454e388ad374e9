"""The outbound side of one service: every `ServiceClient` it uses, built and closed together.

Each client of a service sends the same credential and caller name, reports to the same
metrics and is guarded by a breaker from the same registry (`Breakers`: config, webhook and
shared state from `<PREFIX>_BREAKER_*`) and follows the same canary routes (`routing`, from
`<PREFIX>_ROUTING_*`: a JSON file or a Redis key every process of the stack watches). Use in a
lifespan::

    downstreams = Downstreams(settings, metrics=app.state.metrics)
    payment = downstreams.client("payment", settings.payment_url)
    await downstreams.start()
    try:
        yield {...}
    finally:
        await downstreams.aclose()
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from servicekit.data.redis import create_redis
from servicekit.downstream.breaker_registry import Breakers
from servicekit.downstream.client import ServiceClient
from servicekit.downstream.routing import (
    FileStore,
    MemoryStore,
    RedisStore,
    RouteStore,
    RoutingTable,
)
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
        self._redis: Any = None
        self.routing = RoutingTable(
            self._route_store(settings), allowed_hosts=settings.routing_allowed_hosts
        )
        self._watch: contextlib.AsyncExitStack | None = None

    def _route_store(self, settings: ServiceSettings) -> RouteStore:
        if settings.routing_redis_key and settings.redis_url:
            self._redis = create_redis(settings.redis_url, name=f"{settings.service_name}-routing")
            return RedisStore(self._redis, settings.routing_redis_key)
        if settings.routing_file:
            return FileStore(settings.routing_file)
        return MemoryStore()

    @property
    def upstreams(self) -> dict[str, str]:
        """{downstream: stable upstream} of every client made (the services a route may name)."""
        return {client.name: client.base_url for client in self._clients}

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
            routing=self.routing,
        )
        self._clients.append(client)
        return client

    async def start(self) -> None:
        """Start the breakers' background work and the routing watcher."""
        await self.breakers.start()
        self._watch = contextlib.AsyncExitStack()
        await self._watch.enter_async_context(
            self.routing.watch(self.settings.routing_poll_seconds)
        )

    async def aclose(self) -> None:
        """Close every client, then stop the breakers (flushing webhook notices)."""
        try:
            if self._watch is not None:
                await self._watch.aclose()
            for client in self._clients:
                await client.aclose()
        finally:
            try:
                await self.breakers.aclose()
            finally:
                if self._redis is not None:
                    await self._redis.aclose()
