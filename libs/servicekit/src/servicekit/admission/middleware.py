"""The admission layer: one pure-ASGI layer deciding whether a request gets in.

It applies, in order, the service tier (`servicekit.admission.limiter`: cached reads, then
the queue timeout and the concurrency limit, fixed or adaptive), the data tier
(`servicekit.admission.readonly`: writes refused while the database is saturated) and the
body cap (`servicekit.admission.body`).

Cacheable reads (`cached_paths`: GET answers that do not depend on the caller) also use the
cache under normal load, cache-aside: a fresh answer (`<P>_CACHE_TTL_SECONDS`) is served, a
miss goes to the handler and its 200 is stored. When degraded, a stale cached answer is served
with `X-Degraded: cache`. Health, metrics and the fault switch are never shed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit import context, contract
from servicekit.admission.body import ADMIT, REFUSE, BodyCap
from servicekit.admission.cache import CachedAnswer, ReadCache
from servicekit.admission.limiter import ConcurrencyLimiter
from servicekit.admission.readonly import SAFE_METHODS, ReadOnlyGuard, send_unavailable
from servicekit.edge.credential import OPEN_PATHS
from servicekit.telemetry.logs import mark_shed
from servicekit.telemetry.metrics import Metrics, traffic

logger = logging.getLogger("servicekit.admission")

#: Never shed: probes, metrics, and the operator's fault switch (servicekit.faults), which must
#: still turn off an injected hang while the requests it holds fill the limit, and the read-only
#: switch (servicekit.admission.switch), whose release is a write made in read-only mode.
NEVER_SHED = OPEN_PATHS | {"/internal/faults", "/internal/read-only"}
#: Answers larger than this are passed through, not cached.
MAX_CACHED_BYTES = 256 * 1024
#: Paths whose route template is remembered for answers given without routing.
MAX_REMEMBERED_PATHS = 4096
_GET = "GET"
_DEGRADED = contract.DEGRADED_HEADER.lower().encode()


class AdmissionMiddleware:
    """Pure ASGI, one layer: whether a request gets in, and what it may send.

    In order:

    1. **service tier** (`limiter`): cached reads, then the concurrency limiter;
    2. **data tier** (`readonly`): writes refused while the database is saturated,
       critical calls excepted;
    3. **body cap** (`body.BodyCap`): 413 over the cap.

    All three answer before any body is read. `open_paths` (probes, metrics, the fault switch)
    get the body cap only. One layer, not three: each layer is a coroutine frame and a call
    per request, and the inner ones rarely do anything but pass the request on.

    Critical calls (the context's `PRIORITY`, which the edge sets only for credentialed
    callers) are shed last and pass read-only mode. `limiter` None turns shedding off;
    `cache` None turns caching off; `guard` None turns read-only mode off.
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
        open_paths: Iterable[str] = NEVER_SHED,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limiter = limiter
        self.body_cap = body_cap
        self.guard = guard
        self.cache = cache
        self.cached_paths = tuple(p.rstrip("/") for p in cached_paths)
        self.open_paths = frozenset(open_paths)
        self._degraded_cache = metrics.degraded_responses.labels("cache")
        # Answers given without routing (cache, shed) are timed under the route template
        # the router found for the same path before; "unmatched" if it never saw it.
        self._routes: dict[str, Any] = {}
        #: Cache misses being read through, by key: (generation read at, answer once read).
        self._flights: dict[str, tuple[int, asyncio.Future[CachedAnswer | None]]] = {}
        series = [
            ("service", "concurrency", "live"),
            ("service", "concurrency", "shadow"),
            ("service", "queue", "live"),
            ("service", "queue", "shadow"),
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
            answer, generation = await cache.lookup(
                key, degraded=degraded, refreshing=key in self._flights
            )
            if answer is not None:
                if degraded:
                    self._degraded_cache.inc()
                self._name_route(scope)
                await _send_cached(send, answer, age=cache.age(answer), degraded=degraded)
                return
        # Set by the edge, and only for credentialed callers (servicekit.contract).
        critical = context.get(context.PRIORITY) == context.CRITICAL
        started = None
        if limiter is not None:
            refused = limiter.try_acquire(shadow=shadow, critical=critical)
            if refused is not None:
                self._shed(scope, "service", refused)
                await send_unavailable(send, "over capacity; retry shortly", slug="overloaded")
                return
            if limiter.adaptive is not None:
                started = limiter.clock()
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
                limiter.release(started)
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
        """A cache miss: read through the app and store its 200, one read per key at a time.

        Concurrent misses of one key (at one write generation) are coalesced, as Go's
        singleflight and nginx's `proxy_cache_lock` do: the first goes to the app, the others
        wait for its answer instead of each taking a database connection (and while it reads,
        the expired answer is served to the rest: `ReadCache.lookup`'s `refreshing`). Without
        it, every expiry of a popular answer under load sends all its readers to the pool at
        once, and the pool's queue, not the database, sets their latency (a tail of seconds
        at 4x load, tests/chaos/test_flood_probe.py). A follower whose leader got no cacheable
        answer, or read before a write this one must see, reads for itself.
        """
        flight = self._flights.get(key)
        if flight is not None:
            leader_generation, leader = flight
            # shield: a follower whose client went away must not cancel the others' answer
            shared = await asyncio.shield(leader) if leader_generation == generation else None
            if shared is not None and self.cache is not None:
                self.cache.count("coalesced")
                await _send_cached(send, shared, age=0.0, degraded=False)
            else:
                await self._capped(scope, receive, send)
            return
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = (generation, future)
        answer = None
        try:
            answer = await self._read_capturing(scope, receive, send, generation)
        finally:
            future.set_result(answer)  # never an exception: followers then read for themselves
            if answer is None:
                del self._flights[key]
        if answer is None or self.cache is None:
            return
        try:
            # Stored after the answer went out: the client does not wait for the cache write.
            # The flight lasts until then, so readers arriving meanwhile do not read again.
            await self.cache.store(key, answer.body, answer.content_type, generation)
        finally:
            del self._flights[key]

    async def _read_capturing(
        self, scope: Scope, receive: Receive, send: Send, generation: int
    ) -> CachedAnswer | None:
        """Pass the app's answer on; it, if a 200 small enough to cache, else None."""
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
        if status != 200 or size > MAX_CACHED_BYTES or self.cache is None:
            return None
        body = b"".join(chunks)
        return CachedAnswer(body, content_type.decode("latin-1"), self.cache.clock(), generation)


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
        headers.append((_DEGRADED, b"cache"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
