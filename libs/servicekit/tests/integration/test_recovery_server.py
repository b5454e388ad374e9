"""Recovery under a real uvicorn: 10,000 failing requests, the worker lives and stays flat."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    log = tmp_path / "boom.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "boom_app:create_app",
                "--factory",
                "--app-dir",
                str(HERE),
                "--port",
                str(port),
                "--no-access-log",
                "--timeout-keep-alive",
                "30",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url, proc, log
    finally:
        proc.terminate()
        proc.wait(10)


async def test_ten_thousand_failing_requests_get_500_problems_and_worker_stays_flat(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, proc, log = server
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def hammer(count: int) -> list[httpx.Response]:
            queue = iter(range(count))
            responses: list[httpx.Response] = []

            async def worker() -> None:
                for i in queue:
                    path = "/boom" if i % 2 else "/must-get"
                    responses.append(await client.get(path, headers={"X-Request-ID": f"req-{i}"}))

            await asyncio.gather(*(worker() for _ in range(32)))
            return responses

        await hammer(1_000)  # warm up: imports, caches, connection pool
        before = (await client.get("/stats")).json()
        responses = await hammer(10_000)
        after = (await client.get("/stats")).json()
        health = await client.get("/healthz")

    assert len(responses) == 10_000
    for response in responses:
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 500 and len(body["trace_id"]) == 32
        assert body["request_id"] == response.headers["x-request-id"]
    assert proc.poll() is None and health.status_code == 200
    assert after["tasks"] <= before["tasks"] + 2, (before, after)
    growth = (after["rss_kb"] - before["rss_kb"]) / before["rss_kb"]
    assert growth < 0.10, f"RSS grew {growth:.1%}: {before} -> {after}"

    # Each failure is logged exactly once, as JSON, with its stack.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    errors = [entry for entry in lines if entry["level"] == "error"]
    assert len(errors) == 11_000
    assert all("Traceback" in entry["exception"] and entry["request_id"] for entry in errors)
    assert "Exception in ASGI application" not in log.read_text()


async def test_error_after_the_response_started_closes_the_connection_and_worker_lives(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, proc, log = server
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        # Nothing correct can be sent once the body has begun: the connection is cut, so the
        # client sees an incomplete response instead of a truncated body that looks whole.
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/stream-boom")
        health = await client.get("/healthz")
    assert health.status_code == 200 and proc.poll() is None
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    logged = [e for e in entries if "failed after the response started" in e.get("exception", "")]
    assert len(logged) == 1, "logged exactly once (by the server, which closed the connection)"
