"""The open-loop generator against a real asyncio HTTP server on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from loadtest.journey import BROWSE, CHECKOUT, DETAIL, journey_mix
from loadtest.openloop import Generator, Request, encode, parse_headers
from loadtest.outcomes import ERROR, OK, SHED

ANSWERS = {
    b"/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"/shed": b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
    b"/chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    ),
}


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers by path; `/slow` after 0.3 s; `/close` hangs up. Yields (port, requests seen)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                seen.append(head + body)
                path = head.split(b" ")[1]
                if path == b"/close":
                    writer.close()
                    return
                if path == b"/slow":
                    await asyncio.sleep(0.3)
                writer.write(ANSWERS.get(path, ANSWERS[b"/ok"]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield port, seen


def fixed(*paths: str) -> list[Request]:
    return [Request(p, encode("GET", p, host="t")) for p in paths]


async def test_sends_on_schedule_and_classifies_each_answer(
    server: tuple[int, list[bytes]],
) -> None:
    port, _ = server
    requests = iter(fixed("/ok", "/shed", "/chunked", "/close") * 5)
    generator = Generator("127.0.0.1", port, lambda: next(requests), connections=50, capture=True)
    start = time.monotonic()
    await generator.open_loop(start, rate=40, seconds=0.5)
    assert len(generator.results) == 20 and generator.dropped == 0
    outcomes = {(r.kind, r.status, r.outcome) for r in generator.results}
    assert outcomes == {
        ("/ok", 200, OK),
        ("/shed", 503, SHED),
        ("/chunked", 200, OK),
        ("/close", 0, ERROR),
    }
    chunked = next(r for r in generator.results if r.kind == "/chunked")
    assert chunked.body == b"abcde"
    shed = next(r for r in generator.results if r.kind == "/shed")
    assert parse_headers(shed.head)["retry-after"] == "1"
    # Slot i is due at start + i/40: the schedule, not the answers, sets the sends.
    assert sorted(r.scheduled - start for r in generator.results) == pytest.approx(
        [i / 40 for i in range(20)]
    )


async def test_latency_counts_from_the_scheduled_send_and_busy_pool_drops(
    server: tuple[int, list[bytes]],
) -> None:
    port, _ = server
    slow = fixed("/slow")[0]
    generator = Generator("127.0.0.1", port, lambda: slow, connections=2)
    await generator.open_loop(time.monotonic(), rate=20, seconds=0.5)
    # Two connections each hold a 0.3 s answer: of 10 due sends, most find both busy.
    assert generator.dropped >= 4
    assert len(generator.results) + generator.dropped == 10
    assert all(r.latency >= 0.29 and r.outcome == OK for r in generator.results)


async def test_the_journey_mix_sends_dyed_requests_in_its_weights(
    server: tuple[int, list[bytes]],
) -> None:
    port, seen = server
    mix = journey_mix({"keys": ["k1", "k2"], "dye": True, "host": "127.0.0.1"})
    generator = Generator("127.0.0.1", port, mix, connections=20)
    await generator.open_loop(time.monotonic(), rate=400, seconds=0.5)
    kinds = [r.kind for r in generator.results]
    assert len(kinds) == 200 and {BROWSE, DETAIL, CHECKOUT} == set(kinds)
    assert kinds.count(CHECKOUT) < kinds.count(DETAIL)
    assert all(b"X-Shadow-Traffic: 1\r\n" in raw for raw in seen)
    checkouts = [raw for raw in seen if raw.startswith(b"POST /api/orders ")]
    keys = {raw.split(b"Idempotency-Key: ")[1].split(b"\r\n")[0] for raw in checkouts}
    assert len(keys) == len(checkouts), "every checkout has a fresh Idempotency-Key"
    assert all(raw.endswith(b'"quantity": 1}]}') for raw in checkouts)
