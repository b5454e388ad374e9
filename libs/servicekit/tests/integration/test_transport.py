"""`AiohttpTransport` under `ServiceClient`, against a real uvicorn on a free port.

What httpx's own transport gave callers must hold on aiohttp's pool: the request as httpx
built it, the answer as an `httpx.Response` (decoded by its content-encoding), httpx's error
types (a refused connection is a `ConnectError`, a slow answer a timeout), kept-alive
connections, and none of the races of a connection the server closed while idle.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from servicekit.downstream.client import ServiceClient
from servicekit.downstream.transport import AiohttpTransport
from servicekit.errors import UnavailableError
from uvicorn import Config
from uvicorn.server import Server

PEERS: list[int] = []  # the client port of each request the echo app saw


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers what it got; `/slow` waits 1 s, `/gzip` answers a gzip-encoded body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    PEERS.append(scope["client"][1])
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "body": body.decode(),
    }
    payload = json.dumps(seen).encode()
    headers = [(b"content-type", b"application/json"), (b"set-cookie", b"a=1")]
    headers.append((b"set-cookie", b"b=2"))
    if scope["path"] == "/gzip":
        payload = gzip.compress(payload)
        headers.append((b"content-encoding", b"gzip"))
    status = 418 if scope["path"] == "/teapot" else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def serving(**config: Any) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = Server(Config(echo, lifespan="off", log_level="warning", **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def client(url: str, **kwargs: Any) -> ServiceClient:
    return ServiceClient("echo", url, token="t", **kwargs)


async def test_the_request_goes_out_as_httpx_built_it_and_the_answer_comes_back_whole() -> None:
    async with serving() as url:
        echo_client = client(url)
        try:
            got = await echo_client.request(
                "POST",
                "/orders",
                json={"sku": "a", "n": 2},
                params={"q": "x y"},
                headers={"X-Test": "1"},
            )
            teapot = await echo_client.request("GET", "/teapot")
            zipped = await echo_client.request("GET", "/gzip")
        finally:
            await echo_client.aclose()
    seen = got.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/orders", "q=x+y")
    assert json.loads(seen["body"]) == {"sku": "a", "n": 2}
    headers = dict(seen["headers"])
    assert headers["x-test"] == "1" and headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(seen["body"]))
    assert headers["host"] == url.removeprefix("http://")
    assert "x-service-token" in headers and "x-request-timeout-ms" in headers
    assert [k for k, _ in seen["headers"]].count("host") == 1  # aiohttp's, not a second one
    assert got.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert teapot.status_code == 418  # any status comes back as it is
    assert zipped.json()["path"] == "/gzip"  # decoded once, by httpx


async def test_calls_reuse_kept_alive_connections() -> None:
    PEERS.clear()
    async with serving() as url:
        echo_client = client(url)
        try:
            for _ in range(20):
                await echo_client.request("GET", "/")
        finally:
            await echo_client.aclose()
    assert len(set(PEERS)) == 1, PEERS


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with serving(timeout_keep_alive=1) as url:
        echo_client = client(url)
        try:
            await echo_client.request("GET", "/")
            await asyncio.sleep(1.5)  # the server closes the idle connection meanwhile
            again = await echo_client.request("POST", "/", json={})  # a POST is not retried
        finally:
            await echo_client.aclose()
    assert again.status_code == 200


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        echo_client = client(f"http://127.0.0.1:{port}")
        with pytest.raises(UnavailableError) as caught:
            await echo_client.request("POST", "/", json={})
        await echo_client.aclose()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_slow_answer_is_a_timeout_within_the_callers_budget() -> None:
    async with serving() as url:
        echo_client = client(url, timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(UnavailableError) as caught:
                await echo_client.request("GET", "/slow")
            waited = loop.time() - started
        finally:
            await echo_client.aclose()
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert waited < 0.9  # the 0.3 s budget, not the server's 1 s


async def test_the_pool_is_bounded() -> None:
    PEERS.clear()
    async with serving() as url:
        transport = AiohttpTransport(max_connections=2)
        echo_client = client(url, transport=transport)
        try:
            await asyncio.gather(*(echo_client.request("GET", "/") for _ in range(20)))
        finally:
            await echo_client.aclose()
    assert len(set(PEERS)) <= 2, PEERS
