"""The header deadline and the connection caps, on a real uvicorn (servicekit.serve's config).

The server runs in the test's event loop on a free port; clients are raw sockets (asyncio
streams), so a test can send half a request, trickle, or hold a connection idle. Client
addresses 127.0.0.x are distinct clients to the server (Linux routes all of 127/8 locally).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from servicekit.edge.connections import EVICT_AFTER_SECONDS
from servicekit.serve import ServerSettings, build_config
from uvicorn.server import Server

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
Connect = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 after `?sleep=<seconds>`."""
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    if query.startswith("sleep="):
        await asyncio.sleep(float(query.removeprefix("sleep=")))
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def create_app() -> Any:
    return app


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[Connect]:
    """A server with `settings` (ServerSettings fields); yields `connect(source="127.0.0.1")`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = build_config(
        f"{__name__}:create_app",
        ServerSettings(_env_prefix="CONNECTION_LIMITS_TEST_", port=port, **settings),
        fd_limit=1 << 16,  # the caps under test are the settings, not the descriptor budget
        lifespan="off",
        log_level="warning",
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    writers: list[asyncio.StreamWriter] = []

    async def connect(
        source: str = "127.0.0.1",
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writers.append(writer)
        return reader, writer

    try:
        yield connect
    finally:
        for writer in writers:
            writer.transport.abort()
        server.should_exit = True
        await task
        sock.close()


async def answer(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one answer; the body read by its content-length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split()[1]), body


async def closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) is not None
    except ConnectionError:
        return True


async def test_headers_not_complete_by_the_deadline_get_408_and_the_connection_closes() -> None:
    async with serving(header_timeout=0.5) as connect:
        reader, writer = await connect()
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n")
        for _ in range(4):  # a trickle does not extend the deadline
            await asyncio.sleep(0.1)
            writer.write(b"X-Trickle: 1\r\n")
        status, body = await answer(reader)
        assert await closed(reader)
        elapsed = time.monotonic() - started
    assert status == 408
    assert json.loads(body)["detail"] == "request headers not received within 0.5 s"
    assert 0.45 <= elapsed <= 1.5


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline() -> None:
    async with serving(header_timeout=0.3) as connect:
        reader, _ = await connect()
        started = time.monotonic()
        status, _ = await answer(reader)
        assert await closed(reader)
    assert status == 408 and time.monotonic() - started <= 1.5


async def test_a_slow_handler_is_not_cut_by_the_header_deadline() -> None:
    async with serving(header_timeout=0.3) as connect:
        reader, writer = await connect()
        writer.write(b"GET /?sleep=0.8 HTTP/1.1\r\nHost: test\r\n\r\n")
        assert await answer(reader) == (200, b"ok")


async def test_a_slow_second_request_on_a_kept_alive_connection_gets_its_own_deadline() -> None:
    async with serving(header_timeout=0.5) as connect:
        reader, writer = await connect()
        await asyncio.sleep(0.3)
        writer.write(REQUEST)
        assert await answer(reader) == (200, b"ok")
        await asyncio.sleep(0.3)  # past the first request's deadline: it was cancelled
        writer.write(REQUEST)
        assert await answer(reader) == (200, b"ok")
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\n")
        status, _ = await answer(reader)
        assert await closed(reader)
    assert status == 408 and 0.45 <= time.monotonic() - started <= 1.5


async def test_a_client_over_its_cap_is_refused_at_once_and_others_are_served() -> None:
    async with serving(header_timeout=30, max_connections_per_client=3) as connect:
        held = [await connect() for _ in range(3)]
        reader, writer = await connect()
        started = time.monotonic()
        status, body = await answer(reader)
        assert await closed(reader)
        assert time.monotonic() - started < 0.5
        assert status == 503 and json.loads(body)["status"] == 503
        # Another address is another client.
        reader, writer = await connect("127.0.0.2")
        writer.write(REQUEST)
        assert await answer(reader) == (200, b"ok")
        # A held connection ends: the client has room again.
        held[0][1].transport.abort()
        await asyncio.sleep(0.1)
        reader, writer = await connect()
        writer.write(REQUEST)
        assert await answer(reader) == (200, b"ok")
        # The ones held all along are served too.
        held[1][1].write(REQUEST)
        assert await answer(held[1][0]) == (200, b"ok")


async def test_the_process_cap_refuses_any_client_over_it() -> None:
    async with serving(
        header_timeout=30, max_connections=4, max_connections_per_client=0
    ) as connect:
        held = [await connect(f"127.0.0.{n}") for n in range(1, 5)]
        reader, _ = await connect("127.0.0.9")
        status, _ = await answer(reader)
        assert status == 503 and await closed(reader)
        held[0][1].transport.abort()
        await asyncio.sleep(0.1)
        reader, writer = await connect("127.0.0.9")
        writer.write(REQUEST)
        assert await answer(reader) == (200, b"ok")


async def test_refusals_are_answered_and_closed_with_the_retry_after_header() -> None:
    async with serving(header_timeout=30, max_connections=1) as connect:
        await connect()
        reader, _ = await connect()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"HTTP/1.1 503 " in head
    assert b"retry-after: 1\r\n" in head and b"connection: close\r\n" in head
    assert b"content-type: application/problem+json\r\n" in head


async def test_at_the_process_cap_the_longest_waiting_for_headers_makes_room() -> None:
    async with serving(
        header_timeout=30, max_connections=3, max_connections_per_client=0
    ) as connect:
        served, served_writer = await connect("127.0.0.1")  # oldest, but between requests
        served_writer.write(REQUEST)
        assert await answer(served) == (200, b"ok")
        slow = [await connect(f"127.0.0.{n}") for n in (2, 3)]
        for _, writer in slow:
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n")
        # Younger than EVICT_AFTER_SECONDS: nobody is closed for a newcomer, it is refused.
        reader, _ = await connect("127.0.0.9")
        assert (await answer(reader))[0] == 503
        await asyncio.sleep(EVICT_AFTER_SECONDS + 0.1)
        reader, writer = await connect("127.0.0.9")
        writer.write(REQUEST)
        assert await answer(reader) == (200, b"ok")
        # The one waiting longest for its headers was closed; the others were not.
        status, _ = await answer(slow[0][0])
        assert status == 408 and await closed(slow[0][0])
        served_writer.write(REQUEST)
        assert await answer(served) == (200, b"ok")
        slow[1][1].write(b"\r\n")
        assert await answer(slow[1][0]) == (200, b"ok")
