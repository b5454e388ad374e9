"""Connection limits below the app: a header-read deadline and caps on open connections.

uvicorn reads request headers for as long as a client takes: a slowloris (thousands of
connections, each trickling one header line every few seconds) never completes a request, so
no middleware, API key or rate limit ever sees it, and it holds a file descriptor per
connection until the process has none left; from then on every connection is reset.
uvicorn's own `limit_concurrency` does not help: it answers 503 only once a request's headers
are complete, and it counts the slow connections against the limit, so it would turn the
legitimate requests away instead.

Hence a subclass of uvicorn's httptools protocol (`GuardedHttpProtocol`), the smallest change
that adds what the server lacks, keeping everything else of uvicorn (its parser, flow
control, keep-alive, graceful shutdown, worker supervision):

- a **header deadline**: a timer armed when a connection is accepted (and when a later
  request on it begins) and cancelled when the request's headers are complete; when it fires,
  408 and close. A trickle does not extend it (a total deadline, not an idle timeout);
- a cap on **open connections per process** and one **per client address**, checked when a
  connection is accepted, before a byte is read: the excess gets a 503 problem with
  `Retry-After` and is closed at once, so its descriptor is back within the same loop turn.
  At the process cap, a connection that has waited longest for its headers, and at least
  `EVICT_AFTER_SECONDS`, is closed (408) to make room instead: a legitimate client sends its
  headers within milliseconds, so a slowloris spread over many addresses cannot keep the
  others out.

A reverse proxy in front does more (it buffers slow clients completely, limits per client
across processes); see the README. Counts are per process: with several workers, each
enforces its own caps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

from servicekit.errors import problem_body

logger = logging.getLogger("servicekit.connections")

#: At the process cap, a connection still waiting for its headers after this long gives its
#: place to a new one (far above the milliseconds a client takes to send them).
EVICT_AFTER_SECONDS = 1.0
#: At most one warning per reason this often, with the count since the last one: a flood of
#: refusals must not become a flood of log lines.
LOG_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What `GuardedHttpProtocol` enforces; 0 turns a cap off."""

    header_timeout: float
    max_connections: int
    max_connections_per_client: int


class ServerConfig(Config):
    """uvicorn's `Config` carrying `ConnectionLimits` to every protocol (and every worker)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedHttpProtocol, ws="none", **kwargs)
        self.limits = limits


@functools.cache
def _answer(status: int, title: str, detail: str) -> bytes:
    """A complete `Connection: close` problem answer, written before any request was read."""
    body = problem_body(status, detail, title=title)
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Tally:
    """Per server (per process): open connections by client address, and throttled warnings."""

    def __init__(self) -> None:
        self.by_client: Counter[str] = Counter()
        #: Connections waiting for headers, oldest first (dicts keep insertion order).
        self.waiting: dict[GuardedHttpProtocol, float] = {}
        self._events: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}

    def event(self, reason: str) -> None:
        self._events[reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_INTERVAL_SECONDS) >= LOG_INTERVAL_SECONDS:
            self._logged_at[reason] = now
            count, self._events[reason] = self._events[reason], 0
            logger.warning(
                "connections %s: %d since the last report (%d open, %d clients)",
                reason,
                count,
                self.by_client.total(),
                len(self.by_client),
            )


_TALLIES: weakref.WeakKeyDictionary[ServerState, _Tally] = weakref.WeakKeyDictionary()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and connection caps."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, ServerConfig):
            raise TypeError("GuardedHttpProtocol needs a ServerConfig (servicekit.serve)")
        self.limits = config.limits
        self.tally = _TALLIES.setdefault(server_state, _Tally())
        self.peer: str | None = None  # set while this connection is counted
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self.limits
        remote = get_remote_addr(transport)
        peer = remote[0] if remote else ""
        refusal = None
        if limits.max_connections and len(self.connections) >= limits.max_connections:
            if not self._evict_the_slowest():
                refusal = "refused: the process is at its connection cap"
        elif (
            peer
            and limits.max_connections_per_client
            and self.tally.by_client[peer] >= limits.max_connections_per_client
        ):
            refusal = "refused: a client is at its connection cap"
        if refusal is not None:
            # Not counted, never parsed: answered and closed before anything is read.
            self.transport = transport
            transport.write(_answer(503, "Service Unavailable", "too many connections; retry"))
            transport.close()
            self.tally.event(refusal)
            return
        super().connection_made(transport)
        self.peer = peer
        self.tally.by_client[peer] += 1
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is None:
            return  # refused in connection_made: nothing of uvicorn's was set up
        self._cancel_header_timer()
        by_client = self.tally.by_client
        by_client[self.peer] -= 1
        if by_client[self.peer] <= 0:
            del by_client[self.peer]
        self.peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # a later request on a kept-alive connection gets its own

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self.header_timer is None and self.limits.header_timeout > 0:
            self.header_timer = self.loop.call_later(
                self.limits.header_timeout, self._headers_too_slow
            )
            self.tally.waiting[self] = self.loop.time()

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
            self.tally.waiting.pop(self, None)

    def _evict_the_slowest(self) -> bool:
        """Close the connection waiting longest for its headers, if long enough; True if one was."""
        oldest = next(iter(self.tally.waiting.items()), None)
        if oldest is None or self.loop.time() - oldest[1] < EVICT_AFTER_SECONDS:
            return False
        oldest[0]._close_slow("closed to make room: request headers too slow")
        return True

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        self.tally.waiting.pop(self, None)
        self._close_slow("closed: request headers too slow")

    def _close_slow(self, reason: str) -> None:
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        detail = f"request headers not received within {self.limits.header_timeout:g} s"
        self.transport.write(_answer(408, "Request Timeout", detail))
        # abort, not close: a client that does not read must not keep the descriptor open
        # while asyncio waits to flush; the kernel still sends what it already holds.
        self.transport.abort()
        self.tally.event(reason)
