"""The recovery agent's notices: what it accepts (`parse_notice`) and how it forwards them to
the user's webhooks (`Forwarder`: in order per URL, in the background, retried with backoff).

The format is the kit's breaker notice (servicekit/downstream/webhook.py); notices of
`make canary` and of the agent's own runbook add `event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from recovery_ops import RecoveryMetrics, logger

from infra.manifest import Manifest

FORWARD_ATTEMPTS = 4
_MAX_TEXT = 64


class NoticeError(ValueError):
    """A notice the agent cannot take; the message says which field and what is valid."""


@dataclass(frozen=True)
class Notice:
    body: dict[str, Any]
    service: str
    dependency: str
    to_state: str
    at: float
    event: str | None

    @property
    def opened(self) -> bool:
        return self.event is None and self.to_state == "open"


def parse_notice(body: object, manifest: Manifest) -> Notice:
    """A checked notice; `NoticeError` names the bad field."""
    if not isinstance(body, dict):
        raise NoticeError("a notice is a JSON object (servicekit/downstream/webhook.py)")
    texts = {}
    for name in ("service", "dependency", "to_state"):
        value = body.get(name)
        if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
            raise NoticeError(f"{name} must be a string of 1-{_MAX_TEXT} characters")
        texts[name] = value
    if texts["dependency"] not in manifest.names:
        raise NoticeError(
            f"dependency {texts['dependency']!r} is not a service of the stack; "
            f"valid: {', '.join(manifest.names)}"
        )
    event = body.get("event")
    if event is not None and (not isinstance(event, str) or len(event) > _MAX_TEXT):
        raise NoticeError(f"event must be a string of at most {_MAX_TEXT} characters")
    try:
        at = datetime.fromisoformat(str(body["at"])).timestamp() if "at" in body else time.time()
    except ValueError:
        raise NoticeError("at must be an ISO 8601 time (2026-11-26T15:04:05+00:00)") from None
    return Notice(body, texts["service"], texts["dependency"], texts["to_state"], at, event)


class Forwarder:
    """Delivers notices to the user's webhooks: in order per URL, retried with backoff."""

    def __init__(self, client: httpx.AsyncClient, metrics: RecoveryMetrics) -> None:
        self.client = client
        self.metrics = metrics
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def send(self, url: str, notice: dict[str, Any]) -> None:
        queue = self._queues.get(url)
        if queue is None:
            queue = self._queues[url] = asyncio.Queue()
            self._tasks.append(asyncio.create_task(self._deliver(url, queue)))
        queue.put_nowait(notice)

    async def _deliver(self, url: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            notice = await queue.get()
            for attempt in range(1, FORWARD_ATTEMPTS + 1):
                try:
                    response = await self.client.post(url, json=notice, timeout=2.0)
                    if response.is_success:
                        self.metrics.forwarded.labels("delivered").inc()
                        break
                    problem = f"answered {response.status_code}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if attempt == FORWARD_ATTEMPTS:
                    self.metrics.forwarded.labels("failed").inc()
                    logger.warning("forwarding to %s gave up: %s", url, problem)
                else:
                    await asyncio.sleep(random.uniform(0, 0.5 * 2**attempt))
            queue.task_done()

    async def aclose(self, grace: float = 2.0) -> None:
        """Give what is queued `grace` seconds, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self._queues.values())), grace
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
