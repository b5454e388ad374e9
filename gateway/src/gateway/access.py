"""The access tier: rate limits at the gateway, before any upstream is called.

Three limits, in limits notation (`"200/second"`, `"10/minute"`), each answered as a problem:

    GATEWAY_CLIENT_RATE_LIMIT    per customer (API key), or per client IP without a valid key
                                 -> 429, Retry-After, RateLimit-Limit/-Remaining/-Reset/-Policy
    GATEWAY_CHECKOUT_RATE_LIMIT  checkout attempts (POST /api/orders) per customer, fail-closed
                                 -> 429, same headers
    GATEWAY_GLOBAL_RATE_LIMIT    the whole gateway -> 503 with Retry-After

Per-client limits are checked first, so one noisy client is refused before it spends the
budget everybody shares. `/healthz`, `/readyz` and `/metrics` are never limited; `/admin/*` is
kept out of the global limit so an operator can act during a flood (the per-client limit
still applies). Every refusal is counted in `servicekit_shed_requests{tier="access"}`.

Counting is shared in Redis (`GATEWAY_REDIS_URL`) and falls back to per-process memory when
Redis fails (`gateway.rate_limiter`): a Redis outage never causes a 5xx here. Dyed traffic is
counted apart, under keys with the shadow prefix (`shadow:<GATEWAY_RATE_LIMIT_KEY_PREFIX>:...`):
a load test spends neither a live client's budget nor the live global one (under pressure the
services' admission tier sheds dyed traffic first).

Fail-closed, with a fallback present, means the limit is never exceeded fleet-wide even while
counts cannot be shared: counted per process, a fail-closed limit allows each process only its
share, `limit / GATEWAY_RATE_LIMIT_PROCESSES` (rounded up), and refuses the rest with 429.
Checkouts keep flowing during a Redis outage, just never faster than the limit.
Availability-first limits (client, global) keep their full amount in every process instead.

Why not slowapi's `Limiter`: its checks and header injection call the storage synchronously
(`Limiter._check_request_limit` -> `RateLimiter.hit` and `get_window_stats` of the sync
`limits` API), so with Redis every request would block the event loop on a socket, and a
stalled Redis would freeze the whole process. `limits.aio` storage cannot be plugged into it
(its sync strategies would receive coroutines). So this middleware keeps slowapi's shape (a
pure ASGI middleware like `SlowAPIASGIMiddleware`, the limiter found in app state, slowapi's
`get_remote_address` key function for anonymous callers) over `limits.aio` underneath.
`tests/integration/test_limits_redis_outage.py` shows the difference on a stalled Redis.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis
from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from servicekit import Metrics, ServiceError, context, contract, traffic
from servicekit.data import shadow
from servicekit.edge.credential import OPEN_PATHS
from servicekit.telemetry.logs import mark_shed
from slowapi.util import get_remote_address
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import GatewaySettings
from gateway.exceptions import (
    CheckoutRateLimitedError,
    ClientRateLimitedError,
    GatewayOverloadedError,
)
from gateway.rate_limiter import LONGEST, Decision, FallbackRateLimiter, Rule, parse_limit

#: Reasons counted in `servicekit_shed_requests{tier="access"}`.
REASONS = ("global_rate", "client_rate", "checkout_rate")
CHECKOUT = ("POST", "/api/orders")


def rule(name: str, item: RateLimitItem, *, processes: int = 1) -> Rule:
    """A rule whose per-process amount is the process's share (`processes` > 1: fail-closed)."""
    share = max(1, math.ceil(item.amount / processes))
    local = type(item)(share, item.multiples, item.namespace)
    return Rule(name, item, local)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The three rules of the access tier."""

    global_rule: Rule
    client_rule: Rule
    checkout_rule: Rule

    @classmethod
    def from_limits(
        cls, *, global_limit: str, client_limit: str, checkout_limit: str, processes: int
    ) -> AccessPolicy:
        """Rules from limits notation; the checkout limit is the fail-closed one."""
        return cls(
            global_rule=rule("global", parse_limit(global_limit)),
            client_rule=rule("client", parse_limit(client_limit)),
            checkout_rule=rule("checkout", parse_limit(checkout_limit), processes=processes),
        )


def _rate_limit_headers(rule: Rule, decision: Decision) -> dict[str, str]:
    # draft-ietf-httpapi-ratelimit-headers (the widely deployed three-field form, plus the
    # policy): Reset is delta-seconds, not a timestamp.
    item = rule.item if decision.shared else rule.local_item
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(max(1, math.ceil(decision.reset_after))),
        "RateLimit-Policy": f"{decision.limit};w={item.get_expiry()}",
    }


class AccessLimits:
    """Decide whether a request may enter; hold the limiter and the policy."""

    def __init__(
        self,
        policy: AccessPolicy,
        limiter: FallbackRateLimiter,
        metrics: Metrics,
    ) -> None:
        self.policy = policy
        self.limiter = limiter
        self.metrics = metrics
        for reason in REASONS:  # dashboards show 0, not "no data"
            for label in ("live", "shadow"):
                metrics.shed_requests.labels("access", reason, label)

    def _client(self, scope: Scope) -> tuple[str, bool]:
        # The caller the edge identified from the API key (gateway.keys.ApiKeyTrust).
        customer = context.get(contract.CALLER, contract.ANONYMOUS).customer
        if customer is not None:
            return customer, True
        # No valid key: the request will get 401, but its flood still counts, per address.
        return f"ip:{get_remote_address(Request(scope))}", False

    async def check(self, scope: Scope) -> ServiceError | None:
        """None if the request may go on, else the refusal to answer with."""
        client, known = self._client(scope)
        # Set by the edge, and only for callers allowed to dye (servicekit.contract).
        dyed = bool(context.get(context.SHADOW, False))
        decision = await self.limiter.hit(self.policy.client_rule, "client", client, shadow=dyed)
        if not decision.allowed:
            return self._refuse(
                "client_rate",
                ClientRateLimitedError(
                    f"rate limit for this client exceeded ({decision.limit} per "
                    f"{self.policy.client_rule.item.get_expiry()} s)",
                    retry_after=math.ceil(decision.reset_after),
                    headers=_rate_limit_headers(self.policy.client_rule, decision),
                ),
            )
        if known and (scope["method"], scope["path"].rstrip("/")) == CHECKOUT:
            decision = await self.limiter.hit(
                self.policy.checkout_rule, "checkout", client, shadow=dyed
            )
            if not decision.allowed:
                return self._refuse(
                    "checkout_rate",
                    CheckoutRateLimitedError(
                        f"too many checkout attempts ({decision.limit} per "
                        f"{self.policy.checkout_rule.item.get_expiry()} s)",
                        retry_after=math.ceil(decision.reset_after),
                        headers=_rate_limit_headers(self.policy.checkout_rule, decision),
                    ),
                )
        if scope["path"].startswith("/admin/"):
            return None
        decision = await self.limiter.hit(self.policy.global_rule, "global", shadow=dyed)
        if not decision.allowed:
            return self._refuse(
                "global_rate",
                GatewayOverloadedError(
                    "the gateway is at its request rate limit; try again shortly",
                    retry_after=math.ceil(decision.reset_after),
                ),
            )
        return None

    def _refuse(self, reason: str, error: ServiceError) -> ServiceError:
        self.metrics.shed_requests.labels("access", reason, traffic()).inc()
        return error


class AccessLimitMiddleware:
    """Pure ASGI: refuse over-limit requests before routing, auth or body reading.

    The `AccessLimits` live in the lifespan state (`access_limits`), as slowapi keeps its
    limiter in app state; without them (no lifespan) requests pass unlimited.
    """

    def __init__(self, app: ASGIApp, *, exempt_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        limits: AccessLimits | None = (scope.get("state") or {}).get("access_limits")
        if limits is not None:
            refusal = await limits.check(scope)
            if refusal is not None:
                mark_shed(scope)  # counted by reason; its access line is sampled
                await refusal.to_response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: Connections to Redis per process: a round trip takes ~0.1 ms, so a few dozen carry tens of
#: thousands of hits a second, and a burst waits for a free one instead of opening hundreds
#: (each costs a handshake, and a burst of handshakes would look like an outage).
REDIS_CONNECTIONS = 16


def limiter_redis(url: str, *, timeout: float) -> Redis:
    """The limiter's asyncio Redis client: bounded pool, backstop timeouts, one quick retry.

    One retry, at once and only on a connection error: a pooled connection may have been
    closed by a Redis that restarted since, and a fresh one answers (without it, every stale
    connection in the pool failed once after a restart, and the first of them switched the
    limiter to memory again). A Redis that is down refuses the retry at once too; a stalled
    one is bounded by the limiter's deadline, never by retries.

    `timeout` is the limiter's deadline per call; redis-py's own timeouts (the wait for a
    pooled connection, socket reads) are set well past its longest wait (`LONGEST` deadlines
    on a busy loop), as a backstop only. Equal to it,
    they would race the limiter's deadline, and under load a queue for a pooled connection
    would pass for an outage (`FallbackRateLimiter` tells the two apart; redis-py cannot).
    """
    backstop = 2 * LONGEST * timeout  # past the limiter's longest wait: the limiter decides
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=backstop,
        socket_timeout=backstop,
        socket_connect_timeout=backstop,
        client_name="gateway-limits",
        # A known version: left out, redis-py looks it up in the package metadata on every
        # new connection, which triples the cost of opening one.
        driver_info=DriverInfo(lib_version=redis.__version__),
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


@asynccontextmanager
async def open_access_limits(
    settings: GatewaySettings, *, metrics: Metrics
) -> AsyncIterator[AccessLimits]:
    """The access tier for a lifespan: counts in Redis when `GATEWAY_REDIS_URL` is set."""
    policy = AccessPolicy.from_limits(
        global_limit=settings.global_rate_limit,
        client_limit=settings.client_rate_limit,
        checkout_limit=settings.checkout_rate_limit,
        processes=settings.rate_limit_processes,
    )
    redis = None
    storages: list[RedisStorage | None] = [None, None]
    if settings.redis_url:
        redis = limiter_redis(settings.redis_url, timeout=settings.rate_limit_redis_timeout)
        prefix = settings.rate_limit_key_prefix
        # Live and dyed counts: one pool, two key spaces.
        storages = [
            RedisStorage(
                f"async+{settings.redis_url}",
                implementation="redispy",
                key_prefix=key_prefix,
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]
            )
            for key_prefix in (prefix, shadow.REDIS_PREFIX + prefix)
        ]
    limiter = FallbackRateLimiter(
        storages[0],
        shadow_primary=storages[1],
        timeout=settings.rate_limit_redis_timeout,
        gauge=metrics.rate_limit_fallback,
    )
    try:
        yield AccessLimits(policy, limiter, metrics)
    finally:
        await limiter.aclose()
        if redis is not None:
            await redis.aclose()
            await redis.connection_pool.aclose()
