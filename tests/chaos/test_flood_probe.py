"""A flood at 4x what inventory really sustains, and a probe client beside it.

`test_flood` keeps its flood small by admitting only a few requests a second at the gateway;
here the flood goes straight to one real inventory process (uvicorn, the private PostgreSQL)
with the service credential, as its callers do, so it presses on the process itself (CPU,
event loop, sockets) and on the admission layer. Capacity is measured first (product reads,
closed loop); then `loadtest.openloop`, in a process of its own, sends reads open-loop at 4x it
over up to 1,024 keep-alive connections, while a probe sends one read every 0.2 s, each on a
fresh connection, timed from its scheduled send.

Must hold: every probe request gets an answer (served, or refused with 429/503) and their
p99 is within 1 s; the flood was really above capacity (answers shed or sends dropped); the
process survives.

Not met yet, so marked xfail (strict: it turns red the day it holds, to be unmarked). Measured
on the shared 2-core machine: under uvloop libuv accepts one new connection per loop turn, so
the flood's own connections, opened as its pool grows, fill the accept queue (`ss` showed ~950
waiting, drained at ~30/s) and most probes get nothing within 5 s. On the standard asyncio loop
(used here) every probe is answered, p50 0.66-1.1 s, p99 2.0-3.4 s: with 1,024 requests outstanding
and ~2,800 answers/s, Little's law alone leaves ~0.37 s of mean wait, all of it before any
ASGI code (the reads are answered from the read cache, so the admission layer has nothing
to shed). `uvicorn --limit-concurrency 256` on top gave p99 4.9 s (with B4 sharing the
machine). What would bound it: a cap on the connections each process holds, refused at accept
time (issue 17, item 5), so that the outstanding requests, not only the admitted ones, stay
bounded.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from loadtest.journey import SKUS
from loadtest.openloop import encode

from loadtest import openloop

from .cluster import REPO, wait_until
from .conftest import _pg
from .load import percentile
from .servers import HOST, PrivatePostgres, free_port

#: The loop the probe needs (see above): uvloop's one accept per turn starves fresh connections.
LOOP = "asyncio"
SECRET = "flood-probe-secret"
CREDENTIAL = {"X-Service-Token": SECRET}
FLOOD_SECONDS = 5.0
PROBE_EVERY = 0.2
PROBE_TIMEOUT = 5.0
#: run() starts its schedule this long after it is called (its processes must start first).
SCHEDULE_DELAY = 1.3


def config(port: int, **extra: object) -> dict[str, object]:
    return {
        "port": port,
        "mix": "loadtest.openloop:reads",
        "paths": [f"/products/{sku}" for sku in SKUS],
        "headers": CREDENTIAL,
        "connections": 1024,
        "path": [str(Path(openloop.__file__).parent.parent)],
        **extra,
    }


@pytest.fixture
def inventory(postgres: PrivatePostgres, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """One inventory process on a fresh database of the private PostgreSQL: (port, pid)."""
    database = f"probe_{secrets.token_hex(4)}"
    _pg(postgres, "createdb", database)
    url = postgres.url(database)
    for step in (["servicekit.data.migrations", "inventory", url], ["inventory.seed", url]):
        subprocess.run([sys.executable, "-m", *step], check=True, cwd=REPO, capture_output=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env.update(
        INVENTORY_DATABASE_URL=url,
        INVENTORY_SERVICE_TOKEN=SECRET,
        INVENTORY_LOG_LEVEL="WARNING",
        OTEL_TRACES_SAMPLER="always_off",
    )
    command = [sys.executable, "-m", "uvicorn", "inventory.main:create_app", "--factory"]
    command += ["--host", HOST, "--port", str(port), "--loop", LOOP, "--no-access-log"]
    with (tmp_path / "inventory.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=log)
    try:
        yield port, process.pid
        assert process.poll() is None, "inventory died under the flood"
    finally:
        process.terminate()
        process.wait(timeout=30)
        print((tmp_path / "inventory.log").read_text()[-2000:])
        _pg(postgres, "dropdb", "--force", database)


async def probe(port: int, start: float, count: int) -> list[tuple[float, int]]:
    """`count` reads, one every PROBE_EVERY from `start`, each on a new connection:
    (latency from the scheduled send, status; 0 if none came within PROBE_TIMEOUT)."""
    request = encode(
        "GET", f"/products/{SKUS[0]}", host="probe", headers={**CREDENTIAL, "Connection": "close"}
    )

    async def one(scheduled: float) -> tuple[float, int]:
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(request)
                status_line = await reader.readline()
                writer.close()
            status = int(status_line.split()[1])
        except (TimeoutError, OSError, IndexError, ValueError):
            status = 0
        return time.monotonic() - scheduled, status

    return await asyncio.gather(*(one(start + i * PROBE_EVERY) for i in range(count)))


@pytest.mark.xfail(
    strict=True, reason="p99 2-3.4 s on the asyncio loop, >5 s on uvloop (see above)"
)
async def test_probe_on_fresh_connections_is_answered_within_a_second_under_a_4x_flood(
    inventory: tuple[int, int],
) -> None:
    port, _ = inventory

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                return (await client.get(f"http://{HOST}:{port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

    await wait_until(ready, 60, "inventory ready")
    closed = config(port, mode="closed", closed_connections=64, seconds=2.0)
    results, _ = await asyncio.to_thread(openloop.run, closed)
    capacity = sum(1 for r in results if r.status == 200) / 2.0
    assert capacity > 0, "no read was served before the flood"

    rate = 4 * capacity
    flood = asyncio.create_task(
        asyncio.to_thread(openloop.run, config(port, mode="open", rate=rate, seconds=FLOOD_SECONDS))
    )
    start = time.monotonic() + SCHEDULE_DELAY
    probes = await probe(port, start, int(FLOOD_SECONDS / PROBE_EVERY))
    results, dropped = await flood

    statuses = [status for _, status in probes]
    latencies = [latency for latency, _ in probes]
    refused = sum(1 for r in results if r.status in (429, 503))
    p99 = percentile(latencies, 99)
    summary = (
        f"loop {LOOP}; capacity {capacity:.0f}/s, flood {rate:.0f}/s: {len(results)} answered "
        f"({refused} refused), {dropped} dropped; probe statuses {sorted(set(statuses))}, "
        f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    print(summary)
    assert refused or dropped, f"the flood never exceeded capacity: {summary}"
    assert all(status in (200, 429, 503) for status in statuses), summary
    assert p99 <= 1.0, summary
