"""A small load driver for the chaos scenarios: N workers send checkouts (or reads) closed-loop
for a few seconds, or a mix arrives open-loop (through `loadtest.openloop`, the project's one
open-loop generator); every answer is recorded: when it was sent, how long it took, its
status, body and headers.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from loadtest.journey import SKUS
from loadtest.openloop import Generator, Mix, Request, encode, parse_headers


@dataclass(frozen=True)
class Outcome:
    """One answer (status 0: no HTTP answer at all, `error` says why)."""

    kind: str
    started: float
    latency: float
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ended(self) -> float:
        return self.started + self.latency

    def is_problem(self) -> bool:
        """An RFC 9457 problem body with the fields the contract promises."""
        return (
            self.headers.get("content-type", "").startswith("application/problem+json")
            and isinstance(self.body, dict)
            and self.body.get("status") == self.status
            and all(self.body.get(k) for k in ("type", "title", "detail", "request_id"))
        )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body[:500].decode("utf-8", "replace")


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Recorder:
    """Sends requests and keeps every outcome; times are seconds since the recorder started."""

    def __init__(
        self, client: httpx.AsyncClient, keys: Sequence[str], connections: int = 100
    ) -> None:
        self.client = client
        #: The open-loop generator's connection bound (as the client's own pool bounds `send`).
        self.connections = connections
        self._host = client.base_url.netloc.decode()
        self.keys = list(keys)
        self.outcomes: list[Outcome] = []
        self.origin = time.monotonic()
        self._rng = random.Random(7)

    def now(self) -> float:
        return time.monotonic() - self.origin

    async def send(self, kind: str, method: str, path: str, **kwargs: Any) -> Outcome:
        started = self.now()
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            outcome = Outcome(kind, started, self.now() - started, 0, error=repr(exc))
        else:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:500]
            outcome = Outcome(
                kind,
                started,
                self.now() - started,
                response.status_code,
                body,
                {k.lower(): v for k, v in response.headers.items()},
            )
        self.outcomes.append(outcome)
        return outcome

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._rng.choice(self.keys)}"}

    async def checkout(self, sku: str | None = None) -> Outcome:
        """POST /api/orders with a fresh Idempotency-Key, one unit of one product."""
        headers = {**self._auth(), "Idempotency-Key": secrets.token_hex(16)}
        items = [{"sku": sku or self._rng.choice(SKUS), "quantity": 1}]
        return await self.send(
            "checkout", "POST", "/api/orders", json={"items": items}, headers=headers
        )

    async def read_product(self, sku: str | None = None) -> Outcome:
        path = f"/api/products/{sku or self._rng.choice(SKUS)}"
        return await self.send("read", "GET", path, headers=self._auth())

    async def run(
        self,
        action: Callable[[], Awaitable[Outcome]],
        *,
        concurrency: int,
        seconds: float | None = None,
        until: asyncio.Event | None = None,
        pause: float = 0.0,
    ) -> list[Outcome]:
        """`concurrency` workers repeat `action` for `seconds` or until `until` is set;
        returns this run's outcomes."""
        first = len(self.outcomes)
        deadline = time.monotonic() + seconds if seconds is not None else math.inf
        stop = until or asyncio.Event()

        async def worker() -> None:
            while time.monotonic() < deadline and not stop.is_set():
                await action()
                if pause:
                    await asyncio.sleep(pause)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return self.outcomes[first:]

    def checkout_request(self, sku: str | None = None) -> Request:
        """The request `checkout` sends, encoded for the open-loop generator."""
        headers = {
            **self._auth(),
            "Idempotency-Key": secrets.token_hex(16),
            "Content-Type": "application/json",
        }
        body = json.dumps({"items": [{"sku": sku or self._rng.choice(SKUS), "quantity": 1}]})
        return Request(
            "checkout",
            encode("POST", "/api/orders", host=self._host, headers=headers, body=body.encode()),
        )

    def read_request(self, sku: str | None = None) -> Request:
        """The request `read_product` sends, encoded for the open-loop generator."""
        path = f"/api/products/{sku or self._rng.choice(SKUS)}"
        return Request("read", encode("GET", path, host=self._host, headers=self._auth()))

    async def open_loop(self, mix: Mix, *, rate: float, seconds: float) -> list[Outcome]:
        """Send `mix`'s requests `rate` times a second for `seconds` with `loadtest.openloop`,
        whether or not earlier ones have answered (a slow server does not slow the arrivals;
        latency counts from the scheduled send); returns the outcomes, also recorded.

        A request due while all the client's connections wait is dropped: recorded as status 0.
        """
        url = self.client.base_url
        generator = Generator(
            url.host,
            url.port or 80,
            mix,
            connections=self.connections,
            capture=True,
            drain_timeout=self.client.timeout.read or 15.0,
        )
        start = time.monotonic()
        await generator.open_loop(start, rate, seconds)
        outcomes = [
            Outcome(
                r.kind,
                r.scheduled - self.origin,
                r.latency,
                r.status,
                _json(r.body),
                parse_headers(r.head),
                "" if r.status else "no answer",
            )
            for r in generator.results
        ]
        outcomes += [Outcome("dropped", start - self.origin, 0.0, 0, error="dropped")] * (
            generator.dropped
        )
        self.outcomes.extend(outcomes)
        return outcomes

    async def wait_for(self, kind: str, status: int, count: int, timeout: float) -> float:
        """Wait until `count` answers of `kind` with `status` arrived; returns the time then."""
        deadline = time.monotonic() + timeout
        while len(self.of(kind, status)) < count:
            assert time.monotonic() < deadline, f"not {count} x {kind} {status}: {self.summary()}"
            await asyncio.sleep(0.05)
        return self.now()

    # --- views --------------------------------------------------------------------------------

    def of(self, kind: str | None = None, status: int | None = None) -> list[Outcome]:
        return [
            o
            for o in self.outcomes
            if (kind is None or o.kind == kind) and (status is None or o.status == status)
        ]

    def confirmed_orders(self) -> dict[str, int]:
        """{order id: total} of every 201 checkout answer."""
        return {o.body["id"]: o.body["total_cents"] for o in self.of("checkout", 201)}

    def summary(self) -> str:
        """Answers counted by kind, status and problem type: `{"checkout 503 circuit-open": 4}`."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            label = f"{o.kind} {o.status}"
            if isinstance(o.body, dict) and o.status >= 400:
                label += f" {str(o.body.get('type', '')).rsplit('/', 1)[-1]}"
            counts[label] = counts.get(label, 0) + 1
        return json.dumps(dict(sorted(counts.items())))
