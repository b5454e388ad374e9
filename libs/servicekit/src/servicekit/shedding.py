"""Service tier of load shedding: a concurrency limiter with priority classes and cached reads.

Requests in flight in this process, against the hard limit `L` (`<P>_MAX_CONCURRENCY`)::

    in flight < degrade (L x <P>_DEGRADE_AT) .... everything is admitted
    >= degrade: DEGRADED ........................ cacheable reads with a cached answer are served
                                                  from cache, `X-Degraded: cache`; shadow (dyed)
                                                  traffic is shed (reason "shadow")
    >= L ........................................ normal traffic is shed (reason "concurrency")
    >= L + headroom ............................. critical traffic (`X-Request-Priority:
                                                  critical`: saga confirm and compensate) too

A shed request gets 503 problem+json with `Retry-After` at once: no database, no body read.
Degraded mode is entered when in-flight requests reach the degrade threshold and left once
they stayed below it for `hold` seconds, so the mode (gauge `servicekit_degraded_mode`, one log
line per change) does not flap with every request.

Cacheable reads (`cached_paths`: GET answers that do not depend on the caller) also use the
cache under normal load, cache-aside: a fresh answer (`<P>_CACHE_TTL_SECONDS`) is served, a
miss goes to the handler and its 200 is stored. Health, metrics and the fault switch are
never shed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit import context
from servicekit.auth import OPEN_PATHS
from servicekit.cache import CachedAnswer, MemoryBackend, ReadCache, RedisBackend
from servicekit.client import PRIORITY_HEADER
from servicekit.db import Database, PoolMetrics
from servicekit.logs import mark_shed
from servicekit.metrics import Metrics, traffic
from servicekit.middleware import ADMIT, REFUSE, BodyCap
from servicekit.readonly import SAFE_METHODS, ReadOnlyGuard, send_unavailable
from servicekit.settings import ServiceSettings

logger = logging.getLogger("servicekit.shedding")

#: Never shed: probes, metrics, and the operator's fault switch (servicekit.faults), which must
#: still turn off an injected hang while the requests it holds fill the limit.
NEVER_SHED = OPEN_PATHS | {"/internal/faults"}
#: Critical calls may go this far past the hard limit (at least one request).
CRITICAL_HEADROOM = 0.1
#: Answers larger than this are passed through, not cached.
MAX_CACHED_BYTES = 256 * 1024
#: Paths whose route template is remembered for answers given without routing.
MAX_REMEMBERED_PATHS = 4096
_PRIORITY = PRIORITY_HEADER.lower().encode()
_GET = "GET"


class ConcurrencyLimiter:
    """In-flight accounting and thresholds of one process (the event loop is its only user)."""

    def __init__(
        self,
        limit: int,
        *,
        degrade_at: float = 0.8,
        hold: float = 1.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1 (turn the limiter off instead)")
        self.limit = limit
        self.degrade_threshold = max(1, math.ceil(limit * degrade_at))
        self.critical_limit = limit + max(1, math.ceil(limit * CRITICAL_HEADROOM))
        self.hold = hold
        self.clock = clock
        self.metrics = metrics
        self.in_flight = 0
        self._degraded = False
        self._pressure_at = 0.0
        self._entered_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        if metrics is not None:
            metrics.concurrency_limit.set(limit)
            metrics.degraded_mode.set(0)

    @property
    def degraded(self) -> bool:
        """True in degraded mode (brought up to date first: an idle spell may have ended it)."""
        self._update()
        return self._degraded

    def try_acquire(self, *, shadow: bool = False, critical: bool = False) -> str | None:
        """Take a slot, or return why not ("shadow" or "concurrency") and take nothing."""
        if critical:
            ceiling, reason = self.critical_limit, "concurrency"
        elif shadow:
            ceiling, reason = self.degrade_threshold, "shadow"
        else:
            ceiling, reason = self.limit, "concurrency"
        if self.in_flight >= ceiling:
            self._update()
            return reason
        self.in_flight += 1
        if self._degraded or self.in_flight >= self.degrade_threshold:
            self._update()  # only then is there a mode to enter, refresh or leave
        return None

    def release(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1
        if self._degraded:
            self._update()

    def _update(self) -> None:
        now = self.clock()
        if self.in_flight >= self.degrade_threshold:
            self._pressure_at = now
            if not self._degraded:
                self._enter(now)
        elif self._degraded and now - self._pressure_at >= self.hold:
            self._leave(now)

    def _enter(self, now: float) -> None:
        self._degraded, self._entered_at = True, now
        if self.metrics is not None:
            self.metrics.degraded_mode.set(1)
        logger.warning(
            "entering degraded mode: %d requests in flight (degrade at %d, limit %d)",
            self.in_flight,
            self.degrade_threshold,
            self.limit,
        )
        self._schedule_check()

    def _leave(self, now: float) -> None:
        self._degraded = False
        if self.metrics is not None:
            self.metrics.degraded_mode.set(0)
        logger.info("leaving degraded mode after %.1f s", now - self._entered_at)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_check(self) -> None:
        # Without traffic nobody calls _update: a timer lets an idle process leave the mode.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.hold, self._check)

    def _check(self) -> None:
        self._timer = None
        self._update()
        if self._degraded:
            self._schedule_check()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class AdmissionMiddleware:
    """Pure ASGI, one layer: whether a request gets in, and what it may send.

    In order, as three layers once did:

    1. **service tier** (this module's docstring): cached reads, then the concurrency limiter;
    2. **data tier** (servicekit.readonly): writes refused while the database is saturated,
       critical calls excepted;
    3. **body cap** (servicekit.middleware.BodyCap): 413 over the cap.

    All three answer before any body is read. `open_paths` (probes, metrics, the fault switch)
    get the body cap only. One layer instead of three: each layer is a coroutine frame and a
    call per request, and the two inner ones rarely do anything but pass the request on.

    `trust_priority` honours `X-Request-Priority` (internal services, behind the credential;
    never from the public). `limiter` None turns shedding off; `cache` None turns caching off;
    `guard` None turns read-only mode off.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        limiter: ConcurrencyLimiter | None,
        body_cap: BodyCap,
        guard: ReadOnlyGuard | None = None,
        cache: ReadCache | None = None,
        cached_paths: Iterable[str] = (),
        trust_priority: bool = True,
        open_paths: Iterable[str] = NEVER_SHED,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limiter = limiter
        self.body_cap = body_cap
        self.guard = guard
        self.cache = cache
        self.cached_paths = tuple(p.rstrip("/") for p in cached_paths)
        self.trust_priority = trust_priority
        self.open_paths = frozenset(open_paths)
        self._degraded_cache = metrics.degraded_responses.labels("cache")
        # Answers given without routing (cache, shed) are timed under the route template
        # the router found for the same path before; "unmatched" if it never saw it.
        self._routes: dict[str, Any] = {}
        series = [
            ("service", "concurrency", "live"),
            ("service", "concurrency", "shadow"),
            ("service", "shadow", "shadow"),
        ]
        if guard is not None:
            series += [("data", "read_only", "live"), ("data", "read_only", "shadow")]
        for tier, reason, kind in series:
            metrics.shed_requests.labels(tier, reason, kind)

    def _cacheable(self, scope: Scope) -> bool:
        if self.cache is None or scope["method"] != _GET:
            return False
        path: str = scope["path"]
        return any(path == p or path.startswith(p + "/") for p in self.cached_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.open_paths:
            await self._capped(scope, receive, send)
            return
        limiter, cache = self.limiter, self.cache
        shadow = context.get(context.SHADOW, False)
        key, generation = None, None
        if cache is not None and self._cacheable(scope):
            # Shadow reads may see shadow data: they never share entries with live ones.
            query = scope["query_string"].decode("latin-1")
            key = f"{'shadow' if shadow else 'live'}:{scope['path']}?{query}"
            degraded = limiter is not None and limiter.degraded
            answer, generation = await cache.lookup(key, degraded=degraded)
            if answer is not None:
                if degraded:
                    self._degraded_cache.inc()
                self._name_route(scope)
                await _send_cached(send, answer, age=cache.age(answer), degraded=degraded)
                return
        critical = self.trust_priority and _header(scope, _PRIORITY) == b"critical"
        if critical:
            context.set_value(context.PRIORITY, context.CRITICAL)
        if limiter is not None:
            refused = limiter.try_acquire(shadow=shadow, critical=critical)
            if refused is not None:
                self._shed(scope, "service", refused)
                await send_unavailable(send, "over capacity; retry shortly", slug="overloaded")
                return
        try:
            guard = self.guard
            if (
                guard is not None
                and not critical
                and scope["method"] not in SAFE_METHODS
                and guard.read_only
            ):
                self._shed(scope, "data", "read_only")
                await send_unavailable(
                    send,
                    "the database is saturated: read-only mode, writes are refused for now",
                    slug="read-only",
                    retry_after=guard.retry_after(),
                )
            elif key is not None and generation is not None:
                await self._read_through(scope, receive, send, key, generation)
            elif cache is not None and scope["method"] not in SAFE_METHODS:
                await self._capped(scope, receive, _invalidating(send, cache))
            else:
                verdict = self.body_cap.check(scope)
                if verdict == ADMIT:  # the common case, without another frame
                    await self.app(scope, receive, send)
                else:
                    await self._capped(scope, receive, send, verdict)
        finally:
            if limiter is not None:
                limiter.release()
            if scope["path"] not in self._routes:
                self._learn_route(scope)

    async def _capped(
        self, scope: Scope, receive: Receive, send: Send, verdict: int | None = None
    ) -> None:
        """The app behind the body cap (`verdict`: the cap's check, when already made)."""
        if verdict is None:
            verdict = self.body_cap.check(scope)
        if verdict == ADMIT:
            await self.app(scope, receive, send)
        elif verdict == REFUSE:
            await self.body_cap.refuse(send)
        else:
            await self.body_cap.counted(self.app, scope, receive, send)

    def _shed(self, scope: Scope, tier: str, reason: str) -> None:
        self.metrics.shed_requests.labels(tier, reason, traffic()).inc()
        mark_shed(scope)
        self._name_route(scope)

    def _learn_route(self, scope: Scope) -> None:
        route = scope.get("route")
        if route is not None:
            if len(self._routes) >= MAX_REMEMBERED_PATHS:
                self._routes.clear()
            self._routes[scope["path"]] = route

    def _name_route(self, scope: Scope) -> None:
        route = self._routes.get(scope["path"])
        if route is not None:
            scope["route"] = route

    async def _read_through(
        self, scope: Scope, receive: Receive, send: Send, key: str, generation: int
    ) -> None:
        status = 0
        content_type = b""
        chunks: list[bytes] = []
        size = 0

        async def send_capturing(message: Message) -> None:
            nonlocal status, content_type, size
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"content-type":
                        content_type = value
            elif message["type"] == "http.response.body" and status == 200:
                body = message.get("body", b"")
                size += len(body)
                if size <= MAX_CACHED_BYTES:
                    chunks.append(body)
            await send(message)

        await self._capped(scope, receive, send_capturing)
        # Stored after the answer went out: the client does not wait for the cache write.
        if status == 200 and size <= MAX_CACHED_BYTES and self.cache is not None:
            body = b"".join(chunks)
            await self.cache.store(key, body, content_type.decode("latin-1"), generation)


def _invalidating(send: Send, cache: ReadCache) -> Send:
    """`send` that invalidates the cache before a write's answer leaves (read your writes).

    The unit of work has committed by then; any status counts, a refused write costs one
    counter bump, a missed invalidation of a write that did change data would cost correctness.
    """

    async def send_after_invalidating(message: Message) -> None:
        if message["type"] == "http.response.start":
            await cache.invalidate()
        await send(message)

    return send_after_invalidating


async def _send_cached(send: Send, answer: CachedAnswer, *, age: float, degraded: bool) -> None:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body)).encode()),
        (b"age", str(int(age)).encode()),
    ]
    if degraded:
        headers.append((b"x-degraded", b"cache"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def install_load_shedding(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    cached_reads: Iterable[str] = (),
    trust_priority: bool = True,
) -> None:
    """Add the admission layer (service tier, data tier, body cap) to `app`, from `settings`.

    Call inside the auth layer (see `create_service_app`). The cache starts in-process and the
    data tier blind; `bind_load_shedding` gives them Redis and the database.
    """
    metrics: Metrics = app.state.metrics
    limiter = (
        ConcurrencyLimiter(
            settings.max_concurrency,
            degrade_at=settings.degrade_at,
            hold=settings.degrade_hold_seconds,
            metrics=metrics,
        )
        if settings.max_concurrency
        else None
    )
    paths = tuple(cached_reads)
    cache = (
        ReadCache(
            MemoryBackend(),
            name=settings.service_name,
            ttl=settings.cache_ttl_seconds,
            stale=settings.cache_stale_seconds,
            counter=metrics.cache_requests,
        )
        if paths
        else None
    )
    guard = ReadOnlyGuard(
        pool_wait=settings.read_only_pool_wait_ms / 1000,
        db_latency=settings.read_only_db_latency_ms / 1000,
        window=settings.read_only_window_seconds,
        min_dwell=settings.read_only_min_seconds,
        metrics=metrics,
    )
    app.state.concurrency_limiter, app.state.read_cache, app.state.read_only = limiter, cache, guard
    app.add_middleware(
        AdmissionMiddleware,
        metrics=metrics,
        limiter=limiter,
        body_cap=BodyCap(settings.max_body_bytes),
        guard=guard if settings.read_only_enabled else None,
        cache=cache,
        cached_paths=paths,
        trust_priority=trust_priority,
    )


def bind_load_shedding(app: FastAPI, settings: ServiceSettings, state: Mapping[str, Any]) -> None:
    """At start-up: the read cache moves to Redis when there is one; the pool is watched."""
    cache: ReadCache | None = getattr(app.state, "read_cache", None)
    if cache is not None and state.get("redis") is not None:
        cache.backend = RedisBackend(state["redis"])
    database = state.get("database")
    if not isinstance(database, Database):
        return
    metrics: Metrics = app.state.metrics
    database.observers.append(PoolMetrics(metrics, settings.service_name, database.pool_status))
    if settings.read_only_enabled:
        app.state.read_only.attach(database)
