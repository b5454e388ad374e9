"""The breakers of one service: one per dependency, made from settings, with their webhook and
(optionally) state shared across workers through Redis.

Why the Redis option does not use pybreaker's `CircuitRedisStorage`: that storage talks to
Redis with the synchronous client and the breaker reads its state on every call, so every
outbound call would block the event loop on a Redis round trip (or pay a thread hop if pushed
off the loop), and a slow Redis would slow every call. Instead the state machine stays in
memory, where admitting a call costs no I/O, and `SharedBreakerState` syncs the one fact worth
sharing, "dependency X is open until T", with the asyncio client in a background task:

- a breaker that opens here is published (`SET key {...} PX <time open>`: it expires by itself);
  one that closes here deletes the key;
- every `interval` seconds one `MGET` reads the keys, and a breaker that is closed here while
  another worker holds it open opens for the time left (reason "shared"); it then probes and
  closes on its own, like any open breaker;
- Redis errors never reach a call: they are logged once per outage and each worker goes on
  deciding alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from servicekit.data.redis import create_redis
from servicekit.downstream.breaker import (
    OPEN,
    AsyncCircuitBreaker,
    BreakerConfig,
    BreakerListener,
    Transition,
)
from servicekit.downstream.webhook import BreakerWebhook
from servicekit.settings import ServiceSettings
from servicekit.telemetry.metrics import Metrics

logger = logging.getLogger("servicekit.downstream.breaker_registry")


class SharedBreakerState(BreakerListener):
    """Share open breakers between the workers of one service through Redis (asyncio)."""

    def __init__(self, redis: Redis, *, service: str, interval: float = 1.0) -> None:
        self.redis = redis
        self.service = service
        self.interval = interval
        #: Identifies this worker's entries, so it does not follow itself.
        self.instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._breakers: dict[str, AsyncCircuitBreaker] = {}
        self._outbox: dict[str, Transition] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self._stopping = False

    def key(self, dependency: str) -> str:
        """The Redis key holding `dependency`'s shared state."""
        return f"servicekit:breaker:{self.service}:{dependency}"

    def watch(self, breaker: AsyncCircuitBreaker) -> None:
        """Follow and publish `breaker`'s state (it must list this object as a listener)."""
        self._breakers[breaker.dependency] = breaker

    def transition(self, breaker: AsyncCircuitBreaker, event: Transition) -> None:
        if event.reason != "shared" and event.to_state != "half-open":
            self._outbox[event.dependency] = event
            self._wake.set()

    async def start(self) -> None:
        """Start the sync task (in the lifespan)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"breakers-{self.service}")

    async def aclose(self) -> None:
        """Stop the sync task (publishing what is pending first, briefly)."""
        task, self._task = self._task, None
        if task is None:
            return
        # The flag as well as the cancel: on Python 3.11 a cancel that lands as a Redis
        # command times out can surface as TimeoutError, which `sync` absorbs.
        self._stopping = True
        self._wake.set()
        task.cancel()
        await asyncio.wait({task}, timeout=2.0)
        if self._outbox:
            with suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._publish(), 1.0)

    async def _run(self) -> None:
        while not self._stopping:
            await self.sync()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def sync(self) -> None:
        """Publish local changes, then follow the other workers; never raises RedisError."""
        try:
            await self._publish()
            await self._follow()
        except (RedisError, OSError, TimeoutError) as exc:
            if self._healthy:
                logger.warning("breaker state not shared (Redis: %s); deciding locally", exc)
            self._healthy = False
            return
        if not self._healthy:
            logger.info("breaker state shared through Redis again")
        self._healthy = True

    async def _publish(self) -> None:
        while self._outbox:
            dependency, event = next(iter(self._outbox.items()))
            breaker = self._breakers.get(dependency)
            remaining = breaker.open_remaining() if breaker is not None else 0.0
            if event.to_state == OPEN and remaining > 0:
                value = {"until": time.time() + remaining, "by": self.instance}
                await self.redis.set(
                    self.key(dependency), json.dumps(value), px=max(1, int(remaining * 1000))
                )
            else:
                await self.redis.delete(self.key(dependency))
            # Removed only once sent: a Redis error keeps it for the next round.
            if self._outbox.get(dependency) is event:
                del self._outbox[dependency]

    async def _follow(self) -> None:
        names = list(self._breakers)
        if not names:
            return
        values = await self.redis.mget([self.key(name) for name in names])
        for name, raw in zip(names, values, strict=True):
            if raw is None:
                continue
            try:
                entry: dict[str, Any] = json.loads(raw)
                until = float(entry["until"])
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("by") != self.instance:
                self._breakers[name].follow_open(until - time.time())


class Breakers:
    """One `AsyncCircuitBreaker` per dependency, sharing a config, webhook and shared state.

    Use in a lifespan: `breakers = Breakers.from_settings(settings, metrics=...)`,
    `await breakers.start()`, `breakers.get("payment")` per client, `await breakers.aclose()`.
    """

    def __init__(
        self,
        service: str,
        config: BreakerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        webhook: BreakerWebhook | None = None,
        shared: SharedBreakerState | None = None,
        clock: Callable[[], float] = time.monotonic,
        owns_redis: bool = False,
    ) -> None:
        self.service = service
        self.config = config or BreakerConfig()
        self.metrics = metrics
        self.webhook = webhook
        self.shared = shared
        self._clock = clock
        self._owns_redis = owns_redis
        self._breakers: dict[str, AsyncCircuitBreaker] = {}

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, *, metrics: Metrics | None = None
    ) -> Breakers:
        """Breakers configured by `<PREFIX>_BREAKER_*` (storage, webhook, trip conditions)."""
        service = settings.service_name
        webhook = None
        if settings.breaker_webhook_url:
            webhook = BreakerWebhook(settings.breaker_webhook_url, service=service)
        shared = None
        if settings.breaker_storage == "redis":
            assert settings.redis_url, "validated by ServiceSettings"
            redis = create_redis(settings.redis_url, name=f"{service}-breakers")
            shared = SharedBreakerState(redis, service=service)
        return cls(
            service,
            BreakerConfig.from_settings(settings),
            metrics=metrics,
            webhook=webhook,
            shared=shared,
            owns_redis=shared is not None,
        )

    def get(self, dependency: str, **overrides: Any) -> AsyncCircuitBreaker:
        """The breaker of `dependency`, made on first use; `overrides` adjust its config."""
        breaker = self._breakers.get(dependency)
        if breaker is None:
            listeners: list[BreakerListener] = [
                x for x in (self.webhook, self.shared) if x is not None
            ]
            config = dataclasses.replace(self.config, **overrides) if overrides else self.config
            breaker = AsyncCircuitBreaker(
                dependency, config, clock=self._clock, listeners=listeners, metrics=self.metrics
            )
            if self.shared is not None:
                self.shared.watch(breaker)
            self._breakers[dependency] = breaker
        return breaker

    async def start(self) -> None:
        """Start background work (the shared-state sync, when Redis storage is on)."""
        if self.shared is not None:
            await self.shared.start()

    async def aclose(self) -> None:
        """Stop background work: flush webhook notices, stop syncing, close the Redis client."""
        if self.webhook is not None:
            await self.webhook.aclose()
        if self.shared is not None:
            await self.shared.aclose()
            if self._owns_redis:
                await self.shared.redis.aclose()
