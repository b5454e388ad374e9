"""Breaker webhook against a real HTTP receiver (uvicorn on a free port, in the test's loop).

The receiver fails its first delivery (to prove retries) and records every POST; the breaker
is moved with a fake clock, the notices travel over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import uvicorn
from servicekit import AsyncCircuitBreaker, BreakerConfig
from servicekit.downstream.webhook import BreakerWebhook
from servicekit.testing import FakeClock


@dataclass
class Receiver:
    """An ASGI app that answers `fail_first` POSTs with 500, then 204; keeps every body."""

    fail_first: int = 0
    delay: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body)
        self.attempts.append(payload)
        if self.delay:
            await asyncio.sleep(self.delay)
        status = 500 if len(self.attempts) <= self.fail_first else 204
        if status == 204:
            self.accepted.append(payload)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"receiver got {self.attempts}"
            await asyncio.sleep(0.01)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = Receiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/breaker"
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield app
    finally:
        server.should_exit = True
        await task
        sock.close()


def breaker_with(webhook: BreakerWebhook, clock: FakeClock) -> AsyncCircuitBreaker:
    config = BreakerConfig(consecutive_failures=1, reset_seconds=10, half_open_probes=1)
    return AsyncCircuitBreaker("payment", config, clock=clock, listeners=[webhook])


async def fail() -> None:
    raise ConnectionError("payment is down")


async def ok() -> None:
    return None


async def test_posts_the_change_and_retries_a_failed_delivery(
    receiver: Receiver, fake_clock: FakeClock
) -> None:
    receiver.fail_first = 1
    webhook = BreakerWebhook(receiver.url, service="order", backoff=0.05, min_interval=0)
    breaker = breaker_with(webhook, fake_clock)
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)
    await receiver.until(lambda: len(receiver.accepted) == 1)
    await webhook.aclose()

    assert len(receiver.attempts) == 2 and receiver.attempts[0] == receiver.attempts[1]
    notice = receiver.accepted[0]
    at = datetime.fromisoformat(notice.pop("at"))
    assert at.utcoffset() is not None
    assert notice == {
        "service": "order",
        "dependency": "payment",
        "from_state": "closed",
        "to_state": "open",
        "reason": "consecutive_failures",
        "failure_rate": 100.0,
        "slow_call_rate": 0.0,
        "recovered": False,
        "transitions": 1,
    }
    assert webhook.delivered == 1 and webhook.failed == 0


async def test_a_flapping_breaker_sends_one_notice_then_the_recovery(
    receiver: Receiver, fake_clock: FakeClock
) -> None:
    webhook = BreakerWebhook(receiver.url, service="order", min_interval=0.5)
    breaker = breaker_with(webhook, fake_clock)
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)
    await receiver.until(lambda: len(receiver.accepted) == 1)
    # Flap: half-open -> open four times, then recover; all within min_interval.
    for _ in range(4):
        fake_clock.advance(10)
        with pytest.raises(ConnectionError):
            await breaker.call_async(fail)
    fake_clock.advance(10)
    await breaker.call_async(ok)
    assert breaker.current_state == "closed"

    await receiver.until(lambda: len(receiver.accepted) == 2)
    await asyncio.sleep(0.6)  # a third notice would be due by now
    await webhook.aclose()
    assert [(n["from_state"], n["to_state"]) for n in receiver.accepted] == [
        ("closed", "open"),
        ("open", "closed"),
    ]
    recovery = receiver.accepted[1]
    assert recovery["recovered"] is True
    assert recovery["transitions"] == 10  # 4 x (half-open, open), then half-open, closed
    assert recovery["reason"] == "probes_succeeded"


async def test_a_flap_back_to_the_told_state_sends_nothing(
    receiver: Receiver, fake_clock: FakeClock
) -> None:
    webhook = BreakerWebhook(receiver.url, service="order", min_interval=0.3)
    breaker = breaker_with(webhook, fake_clock)
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)
    await receiver.until(lambda: len(receiver.accepted) == 1)
    fake_clock.advance(10)
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)  # open -> half-open -> open
    await asyncio.sleep(0.5)
    await webhook.aclose()
    assert len(receiver.attempts) == 1


async def test_notifying_never_blocks_the_call(receiver: Receiver, fake_clock: FakeClock) -> None:
    receiver.delay = 1.0
    webhook = BreakerWebhook(receiver.url, service="order", min_interval=0)
    breaker = breaker_with(webhook, fake_clock)
    started = time.perf_counter()
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)
    assert time.perf_counter() - started < 0.05
    await webhook.aclose(grace=3)
    assert len(receiver.accepted) == 1


async def test_shutdown_sends_what_is_pending(receiver: Receiver, fake_clock: FakeClock) -> None:
    webhook = BreakerWebhook(receiver.url, service="order", min_interval=60)
    breaker = breaker_with(webhook, fake_clock)
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)
    await receiver.until(lambda: len(receiver.accepted) == 1)
    fake_clock.advance(10)
    await breaker.call_async(ok)  # the recovery notice waits for min_interval...
    await webhook.aclose()  # ...unless the service stops
    assert [n["to_state"] for n in receiver.accepted] == ["open", "closed"]


async def test_gives_up_after_the_attempts_without_raising(
    receiver: Receiver, fake_clock: FakeClock
) -> None:
    receiver.fail_first = 100
    webhook = BreakerWebhook(
        receiver.url, service="order", attempts=3, backoff=0.01, min_interval=0
    )
    breaker = breaker_with(webhook, fake_clock)
    with pytest.raises(ConnectionError):
        await breaker.call_async(fail)
    await receiver.until(lambda: len(receiver.attempts) == 3)
    await webhook.aclose()
    assert webhook.failed == 1 and webhook.delivered == 0
