"""Background traffic for `make canary LOAD=1`: a closed loop of checkouts and reads.

`workers` tasks each send a checkout (one unit of an affordable product) then a product read,
again and again, through the gateway, so every service gets calls: gateway -> order ->
inventory + payment, and gateway -> inventory. Every answer is kept (`Answer`), so the report
can show what clients saw. A product that runs out of stock (409) leaves the rotation.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field

import httpx

#: The payment service declines anything above this; those checkouts would only test a 402.
AFFORDABLE_CENTS = 100_000


@dataclass(frozen=True)
class Answer:
    at: float
    kind: str
    status: int
    latency_ms: float


@dataclass
class Load:
    gateway: str
    api_key: str
    workers: int = 6
    answers: list[Answer] = field(default_factory=list)
    #: Products to buy (affordable, in stock) and to read (all of the first page).
    skus: list[str] = field(default_factory=list)
    _all: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _send(
        self, client: httpx.AsyncClient, kind: str, method: str, path: str, **kwargs: object
    ) -> int:
        started = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
            status = response.status_code
        except httpx.HTTPError:
            status = 0  # no answer at all
        self.answers.append(Answer(time.time(), kind, status, (time.monotonic() - started) * 1000))
        return status

    async def _worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        while not self._stop.is_set():
            if self.skus:
                sku = rng.choice(self.skus)
                body = {"items": [{"sku": sku, "quantity": 1}]}
                headers = {"Idempotency-Key": secrets.token_hex(16)}
                status = await self._send(
                    client, "checkout", "POST", "/api/orders", json=body, headers=headers
                )
                if status == 409 and sku in self.skus:
                    self.skus.remove(sku)
            sku = rng.choice(self._all) if self._all else "filters-paper-100"
            await self._send(client, "read", "GET", f"/api/products/{sku}")

    async def run(self) -> None:
        """Send traffic until `stop()`."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        limits = httpx.Limits(max_connections=self.workers * 2)
        async with httpx.AsyncClient(
            base_url=self.gateway, headers=headers, timeout=15.0, limits=limits
        ) as client:
            page = await client.get("/api/products", params={"limit": 100})
            page.raise_for_status()
            items = page.json()["items"]
            self._all = [p["sku"] for p in items]
            self.skus = [
                p["sku"] for p in items if p["price_cents"] < AFFORDABLE_CENTS and p["available"]
            ]
            rng = random.Random(13)
            await asyncio.gather(*(self._worker(client, rng) for _ in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()
