"""Weighted canary routing for every outbound call: a stable and an optional canary upstream.

Each downstream has its stable upstream (the configured URL, `<P>_<DOWNSTREAM>_URL`) and may
have a canary route: another upstream, the share of calls it gets in percent (fractions
allowed: 0.5 is one call in 200) and the version it runs. The decision is made once per call,
before the first attempt, so a call and its retries finish on the upstream they started on:
a route change applies to new calls only and never fails one in flight. The decision is one
dict lookup and one random draw against a float; no lock, no I/O.

`X-Canary-Route: canary|stable` (servicekit.contract.CANARY_ROUTE) pins a request, and every
call it makes on every hop, to one side; tests use it.

Routes live in a `RouteStore` shared by every process (a JSON file written atomically, or a
Redis key); `RoutingTable.watch` polls it off the request path and swaps in the new routes,
so every caller of a service follows a change within about one poll interval. The document::

    {"routes": {"payment": {"upstream": "http://127.0.0.1:38113", "weight": 2.0,
                            "version": "0.2.0", "step": "2/5"}}}

An upstream must be a loopback address with a port or a host of an explicit allow-list
(`check_upstream`): the routes are never a way to send traffic to an address that came from a
request. Every process checks them again on load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from servicekit import context, contract
from servicekit.background import run_periodically

logger = logging.getLogger("servicekit.downstream.routing")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: How long a canary that refused a connection gets no calls from this process, unless its
#: route changes first (servicekit.downstream.client reports it).
SUSPEND_SECONDS = 5.0
_MAX_TEXT = 64


class RouteError(ValueError):
    """A route is malformed: the message says which field and why."""


def parse_weight(value: object) -> float:
    """A canary weight in percent: a finite number within 0..100 (fractions allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RouteError(f"weight must be a number within 0..100, got {value!r}")
    try:
        weight = float(value)
    except ValueError:
        raise RouteError(f"weight must be a number within 0..100, got {value!r}") from None
    if not math.isfinite(weight) or not 0.0 <= weight <= 100.0:
        raise RouteError(f"weight must be within 0..100 percent, got {value!r}")
    return weight


def check_upstream(url: object, allowed_hosts: Iterable[str] = ()) -> str:
    """`url` without a trailing slash if it is an allowed upstream, else `RouteError`.

    Allowed: `http(s)://<host>:<port>` with no path, query or credentials, where the host is
    a loopback address (`127.0.0.1`, `localhost`, `::1`) or one of `allowed_hosts`.
    """
    if not isinstance(url, str) or not url or len(url) > 200:
        raise RouteError("upstream must be an http(s) URL of at most 200 characters")
    try:
        parts = urlsplit(url.rstrip("/"))
        port = parts.port
    except ValueError as exc:
        raise RouteError(f"upstream is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RouteError("upstream must start with http:// or https://")
    if parts.username or parts.password or parts.path or parts.query or parts.fragment:
        raise RouteError("upstream must be scheme://host:port, with nothing after the port")
    host = (parts.hostname or "").lower()
    allowed = LOOPBACK_HOSTS | {h.lower() for h in allowed_hosts}
    if host not in allowed:
        raise RouteError(
            f"upstream host {host[:_MAX_TEXT]!r} is not allowed: use 127.0.0.1 or localhost "
            "with a port, or a host listed in <P>_ROUTING_ALLOWED_HOSTS"
        )
    if port is None:
        raise RouteError("upstream must name its port (http://127.0.0.1:8103)")
    return url.rstrip("/")


def _text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise RouteError(f"{name} must be a string of at most {_MAX_TEXT} characters")
    return value


@dataclass(frozen=True, slots=True)
class Route:
    """The canary route of one downstream: `weight` percent of its calls go to `upstream`."""

    upstream: str
    weight: float = 0.0
    version: str | None = None
    #: Where a rollout stands, as the operator or `make canary` reports it ("2/5: 10 %").
    step: str | None = None

    @classmethod
    def parse(cls, raw: object, allowed_hosts: Iterable[str] = ()) -> Route:
        """A checked route from its JSON form; `RouteError` names the bad field."""
        if not isinstance(raw, Mapping):
            raise RouteError("a route must be an object")
        unknown = set(raw) - {"upstream", "weight", "version", "step"}
        if unknown:
            raise RouteError(f"unknown route field(s) {sorted(unknown)}")
        return cls(
            upstream=check_upstream(raw.get("upstream"), allowed_hosts),
            weight=parse_weight(raw.get("weight", 0.0)),
            version=_text(raw.get("version"), "version"),
            step=_text(raw.get("step"), "step"),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_routes(document: object, allowed_hosts: Iterable[str] = ()) -> dict[str, Route]:
    """`{"routes": {service: route}}` -> {service: Route}; `RouteError` on anything else."""
    if not isinstance(document, Mapping) or not isinstance(document.get("routes", {}), Mapping):
        raise RouteError('the routing document must be {"routes": {...}}')
    hosts = tuple(allowed_hosts)
    return {str(name): Route.parse(raw, hosts) for name, raw in document.get("routes", {}).items()}


def dump_routes(routes: Mapping[str, Route]) -> dict[str, Any]:
    """The routing document of `routes`."""
    return {"routes": {name: route.to_json() for name, route in sorted(routes.items())}}


class RouteStore(Protocol):
    """Where the routes of every process live."""

    async def load(self) -> tuple[object, object] | None:
        """`(token, document)`; None when unchanged since the token last returned."""

    async def save(self, document: Mapping[str, Any]) -> None:
        """Replace the document (atomically: a reader sees the old one or the new one)."""


class MemoryStore:
    """Routes of this process only (no store configured): a test, or a single process."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"routes": {}}
        self._version = 0
        self._seen = -1

    async def load(self) -> tuple[object, object] | None:
        if self._seen == self._version:
            return None
        self._seen = self._version
        return self._version, self.document

    async def save(self, document: Mapping[str, Any]) -> None:
        self.document = dict(document)
        self._version += 1


class FileStore:
    """A JSON file (`<P>_ROUTING_FILE`), replaced atomically; a change is a new inode or mtime."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None

    def _read(self) -> tuple[tuple[int, int, int], object] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            token = (0, 0, 0)
            if token == self._seen:
                return None
            self._seen = token
            return token, {"routes": {}}
        # Every save renames a new file over the old one: a new inode, whatever the clock says.
        token = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if token == self._seen:
            return None
        document = json.loads(self.path.read_text(encoding="utf-8"))
        self._seen = token
        return token, document

    async def load(self) -> tuple[object, object] | None:
        return await asyncio.to_thread(self._read)

    def _write(self, document: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the file, flushed, then renamed over it: a reader never sees half.
        fd, temporary = tempfile.mkstemp(prefix=".routing-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    async def save(self, document: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._write, document)


class RedisStore:
    """One Redis key holding the JSON document (`<P>_ROUTING_REDIS_KEY`)."""

    def __init__(self, redis: Any, key: str) -> None:
        self.redis = redis
        self.key = key
        self._seen: bytes | None = None

    async def load(self) -> tuple[object, object] | None:
        raw = await self.redis.get(self.key)
        raw = raw if raw is not None else b'{"routes": {}}'
        raw = raw.encode() if isinstance(raw, str) else raw
        if raw == self._seen:
            return None
        document = json.loads(raw)
        self._seen = raw
        return raw, document

    async def save(self, document: Mapping[str, Any]) -> None:
        await self.redis.set(self.key, json.dumps(document, sort_keys=True))


class RoutingTable:
    """The canary routes this process follows, swapped whole when the store changes.

    `choose(service, stable)` is the per-call decision; `watch()` keeps the table in step with
    the store; `update()` writes a new route through the store (the gateway's admin API).
    """

    def __init__(
        self,
        store: RouteStore | None = None,
        *,
        allowed_hosts: Iterable[str] = (),
        random_: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store: RouteStore = store or MemoryStore()
        self.allowed_hosts = tuple(allowed_hosts)
        self.routes: dict[str, Route] = {}
        self._random = random_
        self._clock = clock
        #: Canary upstreams that refused a connection: url -> monotonic time they get calls again.
        self._suspended: dict[str, float] = {}

    def choose(self, service: str, stable: str) -> tuple[str, bool]:
        """`(upstream, is_canary)` for one call to `service` whose stable upstream is `stable`."""
        route = self.routes.get(service)
        if route is None:
            return stable, False
        pin = context.get(context.CANARY_ROUTE)
        if pin is not None:
            return (route.upstream, True) if pin == contract.CANARY else (stable, False)
        if self._random() * 100.0 >= route.weight:
            return stable, False
        if self._suspended and self._clock() < self._suspended.get(route.upstream, 0.0):
            return stable, False
        return route.upstream, True

    def suspend(self, upstream: str, seconds: float = SUSPEND_SECONDS) -> None:
        """Send no more calls to a canary `upstream` for `seconds` (it refused a connection)."""
        if upstream not in self._suspended:
            logger.warning("canary upstream %s unreachable: suspended for %.0fs", upstream, seconds)
        self._suspended[upstream] = self._clock() + seconds

    def apply(self, routes: Mapping[str, Route]) -> None:
        """Follow `routes` from now on (calls already started keep their upstream)."""
        changed = {n for n in set(self.routes) | set(routes) if self.routes.get(n) != routes.get(n)}
        self.routes = dict(routes)
        self._suspended = {}
        for name in sorted(changed):
            route = routes.get(name)
            if route is None:
                logger.info("canary route of %s removed: every call goes to stable", name)
            else:
                logger.info(
                    "canary route of %s: %s%% to %s (version %s)",
                    name,
                    route.weight,
                    route.upstream,
                    route.version,
                )

    async def refresh(self) -> bool:
        """Read the store; apply its routes if changed. A bad document is logged, not applied."""
        try:
            loaded = await self.store.load()
        except Exception as exc:  # a file being edited by hand, Redis down: keep what works
            logger.warning("routing store unreadable, keeping the last routes: %s", exc)
            return False
        if loaded is None:
            return False
        try:
            routes = parse_routes(loaded[1], self.allowed_hosts)
        except RouteError as exc:
            logger.warning("routing document refused, keeping the last routes: %s", exc)
            return False
        self.apply(routes)
        return True

    async def update(self, service: str, route: Route | None) -> None:
        """Set (or with None remove) the route of `service` in the store, and follow it here.

        The store is read first, so the routes of the other services are kept as they are.
        """
        await self.refresh()
        routes = dict(self.routes)
        if route is None:
            routes.pop(service, None)
        else:
            routes[service] = route
        await self.store.save(dump_routes(routes))
        self.apply(routes)

    @contextlib.asynccontextmanager
    async def watch(self, interval: float) -> AsyncIterator[None]:
        """Poll the store every `interval` seconds in the background until exit."""
        async with run_periodically(self.refresh, name="routing-watch", interval=interval):
            yield
