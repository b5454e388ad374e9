"""Cache-aside for read answers: Redis when the service has one, else a TTL map in the process.

An answer is *fresh* for `ttl` seconds and as long as no write went through the service since
it was read (a generation counter, bumped by every write before its answer leaves): fresh
answers are served like any other, so a client always reads its own writes. Once stale it is
kept for `stale` seconds more and served only while the service is degraded, marked
`X-Degraded: cache` (servicekit.admission): an old `available` count beats a 503 when the
service is drowning. Changes that bypass the HTTP API (a background job) show within `ttl`.

A cache is an optimisation, never a dependency: any Redis error or timeout is a miss (counted
as `error`), and after one the Redis backend stays away for `cooldown` seconds, so a stalled
Redis costs one short timeout per cool-down, not one per request.

Dyed (load-test) traffic has a cache of its own: its entries and its generation counter carry
the shadow prefix (`servicekit.data.shadow.redis_key`), in Redis and in the process alike, so
a dyed read never serves or stores a live answer and a dyed write never makes live answers stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from servicekit.data.shadow import redis_key

logger = logging.getLogger("servicekit.admission.cache")


class CacheUnavailableError(Exception):
    """The backend failed or is cooling down: the caller treats it as a miss."""


class CacheBackend(Protocol):
    """Where cached bytes live. `set` keeps the value for `ttl` seconds at most."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def incr(self, key: str) -> int: ...


class MemoryBackend:
    """A bounded TTL map in this process (least recently used entries go first)."""

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters: dict[str, int] = {}

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values (None where absent or expired)."""
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> bytes | None:
        counter = self._counters.get(key)
        if counter is not None:
            return b"%d" % counter  # as Redis answers GET on an INCR'd key
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self.clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds, evicting the least recently used when full."""
        self._entries[key] = (self.clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def incr(self, key: str) -> int:
        """Add one to the counter `key` (it never expires); returns the new value."""
        value = self._counters.get(key, 0) + 1
        self._counters[key] = value
        return value

    def __len__(self) -> int:
        return len(self._entries)


class RedisBackend:
    """Redis with a per-call deadline and a cool-down after a failure."""

    def __init__(
        self,
        redis: Redis,
        *,
        timeout: float = 0.05,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.timeout = timeout
        self.cooldown = cooldown
        self.clock = clock
        self._down_until = 0.0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """MGET; raises `CacheUnavailableError` on any failure."""
        values = await self._call(lambda: self.redis.mget(list(keys)))
        return [v if isinstance(v, bytes) else None for v in values]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """SET with PX; raises `CacheUnavailableError` on any failure."""
        await self._call(lambda: self.redis.set(key, value, px=max(1, int(ttl * 1000))))

    async def incr(self, key: str) -> int:
        """INCR; raises `CacheUnavailableError` on any failure."""
        return int(await self._call(lambda: self.redis.incr(key)))

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        if self.clock() < self._down_until:
            raise CacheUnavailableError("redis cooling down after an error")
        try:
            # The client's own socket timeout (0.25 s) is for everyone; a cache read must give
            # up sooner than the database read it is meant to save.
            async with asyncio.timeout(self.timeout):
                return await command()
        except (RedisError, OSError, TimeoutError) as exc:
            if self.clock() >= self._down_until:
                logger.warning("cache backend failed (%s); treating as misses", exc)
            self._down_until = self.clock() + self.cooldown
            raise CacheUnavailableError(str(exc) or type(exc).__name__) from exc


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer: body, media type, when it was stored (wall clock), write generation."""

    body: bytes
    content_type: str
    stored_at: float
    generation: int = 0

    def encode(self) -> bytes:
        """`<generation> <stored_at>\\n<content type>\\n<body>`: readable in redis-cli."""
        head = b"%d %.6f\n%s\n" % (
            self.generation,
            self.stored_at,
            self.content_type.encode("latin-1"),
        )
        return head + self.body

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        """Parse `encode`'s format; None for anything else (a foreign or corrupt value)."""
        parts = raw.split(b"\n", 2)
        if len(parts) != 3:
            return None
        try:
            generation, stored_at = parts[0].split(b" ")
            return cls(parts[2], parts[1].decode("latin-1"), float(stored_at), int(generation))
        except ValueError:
            return None


#: `servicekit_cache_requests{result}`: every lookup is a hit, a miss or an error; a miss
#: answered by another request's concurrent read of the same key is also `coalesced`.
RESULTS = ("hit", "miss", "error", "coalesced")


class ReadCache:
    """Cache-aside of read answers, counted in `servicekit_cache_requests{cache, result}`."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        name: str,
        ttl: float,
        stale: float,
        counter: Counter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.name = name
        self.ttl = ttl
        #: How long an answer is kept at all (fresh + stale): what a degraded read may serve.
        self.keep = ttl + stale
        self.clock = clock
        self._prefix = f"servicekit:cache:{name}:"
        self._generation = f"servicekit:cache:{name}#generation"
        self._results = {r: counter.labels(name, r) for r in RESULTS} if counter else {}

    def count(self, result: str) -> None:
        """Count one lookup's `result` (one of RESULTS)."""
        child = self._results.get(result)
        if child is not None:
            child.inc()

    async def lookup(
        self, key: str, *, degraded: bool, refreshing: bool = False
    ) -> tuple[CachedAnswer | None, int | None]:
        """(answer, generation) for `key`; errors are misses.

        The answer is there when fresh, or, if `degraded`, when still kept. While another
        request is reading `key` again (`refreshing`), an answer past its ttl is served too
        if still kept and no write went through since (stale-while-revalidate, RFC 5861): one
        reader waits for the database, not every reader of a popular answer each time it
        expires. The generation (None after an error) is what `store` must be given for the
        answer read next.
        """
        try:
            raw_generation, raw = await self.backend.get_many(
                [redis_key(self._generation), redis_key(self._prefix + key)]
            )
        except CacheUnavailableError:
            self.count("error")
            return None, None
        generation = int(raw_generation) if raw_generation and raw_generation.isdigit() else 0
        answer = CachedAnswer.decode(raw) if raw is not None else None
        if answer is not None:
            age = self.clock() - answer.stored_at
            if degraded:
                usable = age <= self.keep
            elif answer.generation != generation:
                usable = False  # a write went through since: read your writes
            else:
                usable = age <= (self.keep if refreshing else self.ttl)
            if usable:
                self.count("hit")
                return answer, generation
        self.count("miss")
        return None, generation

    async def store(self, key: str, body: bytes, content_type: str, generation: int) -> None:
        """Keep `body`, read at `generation`, for `ttl + stale` seconds; failures are dropped."""
        answer = CachedAnswer(body, content_type, self.clock(), generation)
        try:
            await self.backend.set(redis_key(self._prefix + key), answer.encode(), self.keep)
        except CacheUnavailableError:
            return

    async def invalidate(self) -> None:
        """A write went through: no answer stored before now is fresh any more."""
        try:
            await self.backend.incr(redis_key(self._generation))
        except CacheUnavailableError:
            return

    def age(self, answer: CachedAnswer) -> float:
        """Seconds since `answer` was stored (for the `Age` header)."""
        return max(0.0, self.clock() - answer.stored_at)
