"""An open-loop HTTP/1.1 load generator: requests leave on a schedule, whatever the answers do.

Request i is due at `start + i / rate` (a constant arrival rate, not closed-loop): a slow
server does not slow the arrivals, and latency is measured from the *scheduled* send time, so
neither a slow server nor a late generator can hide a queue (no coordinated omission). How
late the generator itself sent (`lag`) is recorded per request: a generator far behind its
schedule did not offer its rate, and the caller should say so.

Requests go over raw HTTP/1.1 keep-alive connections opened on demand, at most `connections`
(a bounded client pool, as real callers have). A request due while every connection waits on
an answer is *dropped*: counted as offered and failed, never sent. Each connection is an
asyncio protocol, a few microseconds per request, because a generator usually shares the
machine with what it measures.

What is sent is pluggable: a *mix* is a callable returning the next `Request` (its name and
its encoded bytes; `encode` builds them), and a *classifier* maps each answer to an outcome
(`loadtest.outcomes`; by default `classify_raw`). Used three ways:

- in-process, in a running event loop: `Generator(...).open_loop(...)` (the chaos flood);
- in several processes sharing one schedule, each sending every n-th slot: `run(config)`,
  which starts `python -m loadtest.openloop <config>` per process (benchmark B4); the mix
  then comes from a factory named `module:attribute` in the config, called with the config;
- closed-loop, every connection sending again as soon as it is answered: `closed_loop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

from loadtest.outcomes import ERROR, classify_raw

#: The generator sends what fell due every this many seconds (it adds to latency, never hides).
TICK = 0.001
#: One generator process keeps its schedule up to about this rate on a 2-core machine.
RATE_PER_PROCESS = 40_000.0


class Request(NamedTuple):
    """One request of a mix: `kind` names it in results (an endpoint), `raw` is sent as is."""

    kind: str
    raw: bytes


def encode(
    method: str,
    path: str,
    *,
    host: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 keep-alive request; a body gets its Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


Mix = Callable[[], Request]
#: (status, head, body) -> outcome; head is the status line and headers as received.
Classifier = Callable[[int, bytes, bytes], str]


class Result(NamedTuple):
    """One request: latency from its scheduled send, lag behind the schedule (seconds).

    `head` and `body` are kept only by a generator made with `capture=True`.
    """

    kind: str
    status: int
    outcome: str
    latency: float
    lag: float
    scheduled: float
    head: bytes = b""
    body: bytes = b""


def parse_headers(head: bytes) -> dict[str, str]:
    """The headers of a captured answer, names in lower case."""
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _body_end(buffer: bytearray, start: int, head: bytes) -> tuple[int, bytes] | None:
    """Where the body that starts at `start` ends, and the body; None while incomplete."""
    lower = head.lower()
    if b"\r\ntransfer-encoding: chunked" not in lower:
        length = 0
        marker = lower.find(b"\r\ncontent-length:")
        if marker >= 0:
            line_end = lower.find(b"\r\n", marker + 2)
            length = int(lower[marker + 17 : line_end if line_end >= 0 else None])
        if len(buffer) < start + length:
            return None
        return start + length, bytes(buffer[start : start + length])
    body = bytearray()
    position = start
    while True:
        size_end = buffer.find(b"\r\n", position)
        if size_end < 0:
            return None
        size = int(bytes(buffer[position:size_end]).split(b";")[0], 16)
        chunk_start = size_end + 2
        if size == 0:
            # No trailers are sent by the servers measured here: the last chunk ends at CRLF.
            if len(buffer) < chunk_start + 2:
                return None
            return chunk_start + 2, bytes(body)
        if len(buffer) < chunk_start + size + 2:
            return None
        body += buffer[chunk_start : chunk_start + size]
        position = chunk_start + size + 2


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request outstanding.

    A protocol, not streams and a task per request: each request must cost the generator
    only a few microseconds.
    """

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: (kind, scheduled, lag) of the request in flight, None when idle.
        self.pending: tuple[str, float, float] | None = None
        self.queued: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        if self.queued is not None:
            self.transport.write(self.queued)
            self.queued = None

    def send(self, kind: str, raw: bytes, scheduled: float, lag: float) -> None:
        self.pending = (kind, scheduled, lag)
        if self.transport is None:
            self.queued = raw  # still connecting: sent by connection_made
        else:
            self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.pending is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            found = _body_end(self.buffer, end + 4, head)
            if found is None:
                return
            stop, body = found
            del self.buffer[:stop]
            status = int(head[9:12])
            kind, scheduled, lag = self.pending
            self.pending = None
            generator = self.generator
            outcome = generator.classify(status, head, body)
            latency = time.monotonic() - scheduled
            if generator.capture:
                result = Result(kind, status, outcome, latency, lag, scheduled, head, body)
            else:
                result = Result(kind, status, outcome, latency, lag, scheduled)
            generator.done(self, result)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)


class Generator:
    """Open- or closed-loop HTTP/1.1 load from `mix` over at most `connections` connections."""

    def __init__(
        self,
        host: str,
        port: int,
        mix: Mix,
        *,
        connections: int,
        classify: Classifier = classify_raw,
        capture: bool = False,
        drain_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.mix = mix
        self.connections = connections
        self.classify = classify
        self.capture = capture
        self.drain_timeout = drain_timeout
        self.idle: list[Connection] = []
        self.busy: set[Connection] = set()
        self.results: list[Result] = []
        self.dropped = 0
        self.closed_loop_until = 0.0
        self.all_answered = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def send(self, scheduled: float) -> None:
        """Send the next request of the mix, due at `scheduled`, on a free connection."""
        if not self.idle and len(self.busy) >= self.connections:
            # Every connection waits on an answer: the server already holds `connections`
            # requests. Counted as offered and failed (never as goodput); decided first, as
            # cheaply as can be: far above capacity most requests end here.
            self.dropped += 1
            return
        kind, raw = self.mix()
        lag = time.monotonic() - scheduled
        if self.idle:
            connection = self.idle.pop()
        else:
            connection = Connection(self)
            task = self.loop.create_task(
                self.loop.create_connection(lambda: connection, self.host, self.port)
            )
            task.add_done_callback(functools.partial(self._connected, connection=connection))
        self.busy.add(connection)
        self.all_answered.clear()
        connection.send(kind, raw, scheduled, lag)

    def _connected(self, task: asyncio.Task[Any], *, connection: Connection) -> None:
        if task.cancelled() or task.exception() is not None:
            self.lost(connection)

    def done(self, connection: Connection, result: Result) -> None:
        self.results.append(result)
        self._free(connection)
        if time.monotonic() < self.closed_loop_until:
            self.busy.add(connection)
            kind, raw = self.mix()
            connection.send(kind, raw, time.monotonic(), 0.0)
        else:
            self.idle.append(connection)

    def _free(self, connection: Connection) -> None:
        self.busy.discard(connection)
        if not self.busy:
            self.all_answered.set()

    def lost(self, connection: Connection) -> None:
        """The connection closed (or never opened): its request, if any, failed (status 0)."""
        if connection.pending is not None:
            kind, scheduled, lag = connection.pending
            connection.pending = None
            latency = time.monotonic() - scheduled
            self.results.append(Result(kind, 0, ERROR, latency, lag, scheduled))
        self._free(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    async def open_loop(
        self, start: float, rate: float, seconds: float, share: int = 0, of: int = 1
    ) -> None:
        """Send slots `share`, `share + of`, ... of one schedule at `rate`/s from `start`
        (a `time.monotonic()` value), then wait for the answers still due.

        `of` processes run one schedule between them, each taking every `of`-th slot.
        """
        total = int(rate * seconds)
        slot = share
        while slot < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            while slot < due:
                self.send(start + slot / rate)
                slot += of
            # A fixed tick, not "until the next slot": at thousands per second that would
            # spin, and the CPU it burns is taken from the server under test.
            await asyncio.sleep(TICK)
        await self.drain()

    async def closed_loop(self, connections: int, seconds: float) -> None:
        """Keep `connections` requests in flight for `seconds`, then wait for the last ones."""
        self.closed_loop_until = time.monotonic() + seconds
        for _ in range(connections):
            self.send(time.monotonic())
        await asyncio.sleep(seconds)
        await self.drain()

    async def drain(self) -> None:
        """Wait for the answers still due (at most `drain_timeout`); those missing then failed."""
        if self.busy:
            self.all_answered.clear()  # may be stale: set whenever busy emptied for a moment
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_answered.wait(), self.drain_timeout)
        for connection in list(self.busy):
            if connection.transport is not None:
                connection.transport.abort()
            self.lost(connection)
        for connection in self.idle:
            if connection.transport is not None:
                connection.transport.close()


# --- several processes, one schedule ----------------------------------------------------------


def _resolve(spec: str, paths: Sequence[str]) -> Any:
    """The object named `module:attribute`, importable from sys.path plus `paths`."""
    for path in paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def reads(config: dict[str, Any]) -> Mix:
    """A mix factory for `run`: GETs of `config["paths"]` in turn, with `config["headers"]`."""
    host = config.get("host", "127.0.0.1")
    headers = config.get("headers", {})
    requests = [
        Request(path.split("?", 1)[0], encode("GET", path, host=host, headers=headers))
        for path in config["paths"]
    ]
    turn = iter(range(config.get("share", 0), 1 << 62))
    return lambda: requests[next(turn) % len(requests)]


def generate(config: dict[str, Any]) -> dict[str, Any]:
    """One generator process's share of a `run`: its results as JSON-ready lists, and drops.

    `config["mix"]` names a factory `(config) -> Mix`, `config["classifier"]` (optional) a
    factory `(config) -> Classifier`; `config["path"]` lists folders to import them from.
    """
    paths = config.get("path", [])
    mix = _resolve(config["mix"], paths)(config)
    classify = classify_raw
    if config.get("classifier"):
        classify = _resolve(config["classifier"], paths)(config)
    share, of = config.get("share", 0), config.get("of", 1)

    async def run() -> dict[str, Any]:
        generator = Generator(
            config.get("host", "127.0.0.1"),
            config["port"],
            mix,
            connections=max(1, config["connections"] // of),
            classify=classify,
        )
        if config["mode"] == "closed":
            await generator.closed_loop(config["closed_connections"], config["seconds"])
        else:
            await generator.open_loop(config["start"], config["rate"], config["seconds"], share, of)
        return {"results": [list(r[:6]) for r in generator.results], "dropped": generator.dropped}

    try:
        import uvloop
    except ImportError:
        return asyncio.run(run())
    return uvloop.run(run())


def run(config: dict[str, Any], *, prefix: Sequence[str] = ()) -> tuple[list[Result], int]:
    """Run `config` (see `generate`) in enough processes for its rate; (results, dropped).

    Open loop (`mode: "open"`, `rate`, `seconds`) is split across
    ceil(rate / RATE_PER_PROCESS) processes sharing one schedule; closed loop (`mode:
    "closed"`, `closed_connections`, `seconds`) runs in one. `prefix` goes before the
    command (for example `taskset -c 1` to pin the generators to a CPU).
    """
    processes = 1
    if config["mode"] == "open":
        processes = max(1, math.ceil(config["rate"] / RATE_PER_PROCESS))
    # One clock for all (CLOCK_MONOTONIC is system-wide on Linux): the schedule starts once
    # every process has had time to start Python.
    start = time.monotonic() + 1.0 + 0.3 * processes
    with tempfile.TemporaryDirectory(prefix="openloop-") as folder:
        running = []
        for share in range(processes):
            out = Path(folder) / f"{share}.json"
            part = {**config, "start": start, "share": share, "of": processes, "out": str(out)}
            command = [*prefix, sys.executable, "-m", "loadtest.openloop", json.dumps(part)]
            running.append((subprocess.Popen(command), out))  # noqa: S603 (our own command)
        results: list[Result] = []
        dropped = 0
        for process, out in running:
            if process.wait() != 0:
                raise RuntimeError(f"generator process failed ({process.returncode})")
            part_result = json.loads(out.read_text())
            results.extend(Result(*r) for r in part_result["results"])
            dropped += part_result["dropped"]
    return results, dropped


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    Path(settings["out"]).write_text(json.dumps(generate(settings)))
