"""Service tier: concurrency limit with priority classes, degraded mode, cached reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httpx
import pytest
import servicekit as kit
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic_settings import SettingsConfigDict
from servicekit import context
from servicekit.admission.cache import RedisBackend
from servicekit.admission.limiter import ConcurrencyLimiter
from servicekit.testing import FakeClock, lifespan_client

from .test_cache import FailingRedis

TOKEN = {"X-Service-Token": "dev-service-token"}
CRITICAL = {"X-Request-Priority": "critical"}
SHADOW = {"X-Shadow-Traffic": "1"}


class ShopSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "shop"
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")


class Shop:
    """A service with a cacheable product read, a write, and a handler that waits on a gate."""

    def __init__(self, *, internal: bool = True, **settings: Any) -> None:
        self.stock = {"mug": 10}
        self.db_reads = 0
        self.gate = asyncio.Event()
        self.reads_open = asyncio.Event()  # a read waits on it ("the database is slow")
        self.reads_open.set()
        router = APIRouter()

        @router.get("/products/{sku}")
        async def read_product(sku: str) -> dict[str, Any]:
            self.db_reads += 1
            await self.reads_open.wait()
            if sku == "retired":
                raise HTTPException(404, f"no product {sku}")
            return {"sku": sku, "available": self.stock.get(sku, 0)}

        @router.post("/products/{sku}/take")
        async def take_product(sku: str) -> dict[str, Any]:
            self.stock[sku] -= 1
            return {"sku": sku, "available": self.stock[sku]}

        @router.api_route("/hold", methods=["GET", "POST"])
        async def hold() -> dict[str, Any]:
            await self.gate.wait()
            return {"outgoing": kit.propagation_headers()}

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
            yield {}

        values: dict[str, Any] = {"max_concurrency": 4, "degrade_at": 0.5} | settings
        self.app = kit.create_service_app(
            ShopSettings(**values),
            title="shop",
            lifespan=lifespan,
            routers=[router],
            internal=internal,
            cached_reads=["/products"],
        )

    @property
    def limiter(self) -> ConcurrencyLimiter:
        limiter: ConcurrencyLimiter = self.app.state.concurrency_limiter
        return limiter

    def sample(self, name: str, **labels: str) -> float:
        if name.startswith("http_server_request_duration"):
            labels.setdefault("version", self.app.state.settings.version)
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    async def fill(self, client: httpx.AsyncClient, n: int, **headers: str) -> list[Any]:
        """Start `n` requests that wait on the gate; return once all are in flight."""
        target = self.limiter.in_flight + n
        tasks = [asyncio.ensure_future(client.get("/hold", headers=headers)) for _ in range(n)]
        for _ in range(1000):
            if self.limiter.in_flight >= target:
                return tasks
            await asyncio.sleep(0)
        raise AssertionError(f"only {self.limiter.in_flight} in flight, wanted {target}")


async def finish(shop: Shop, tasks: list[Awaitable[httpx.Response]]) -> list[int]:
    shop.gate.set()
    return [r.status_code for r in await asyncio.gather(*tasks)]


def test_thresholds_by_priority_class() -> None:
    limiter = ConcurrencyLimiter(10, degrade_at=0.8)
    assert (limiter.degrade_threshold, limiter.limit, limiter.critical_limit) == (8, 10, 11)
    assert [limiter.try_acquire() for _ in range(8)] == [None] * 8
    assert limiter.try_acquire(shadow=True) == "shadow"
    assert [limiter.try_acquire(), limiter.try_acquire()] == [None, None]
    assert limiter.try_acquire() == "concurrency"
    assert limiter.try_acquire(critical=True) is None
    assert limiter.try_acquire(critical=True) == "concurrency"
    assert limiter.in_flight == 11


def test_degraded_mode_has_hysteresis_and_logs_each_change_once(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = ConcurrencyLimiter(4, degrade_at=0.5, hold=1.0, clock=fake_clock)
    caplog.set_level(logging.INFO, logger="servicekit.admission")
    limiter.try_acquire()
    assert not limiter.degraded
    limiter.try_acquire()
    limiter.try_acquire()
    assert limiter.degraded
    limiter.release()
    limiter.release()
    assert limiter.degraded  # below the threshold, but not for `hold` yet
    fake_clock.advance(0.5)
    limiter.try_acquire()  # back at the threshold: pressure again
    limiter.release()
    fake_clock.advance(0.9)
    limiter.release()
    assert limiter.degraded
    fake_clock.advance(0.2)
    limiter.try_acquire()
    assert not limiter.degraded
    messages = [r.getMessage().split(":")[0].split(" after")[0] for r in caplog.records]
    assert messages == ["entering degraded mode", "leaving degraded mode"]


async def test_over_the_limit_answers_503_fast_and_health_still_answers() -> None:
    shop = Shop()
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        shop.gate.set()
        await client.get("/hold")  # routed once: shed answers are then timed under "/hold"
        shop.gate.clear()
        held = await shop.fill(client, 4)
        refused = await client.get("/hold")
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
        assert await finish(shop, held) == [200] * 4

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["type"] == "/problems/overloaded" and body["request_id"] and body["trace_id"]
    assert health.status_code == 200 and metrics.status_code == 200
    shed = {"tier": "service", "reason": "concurrency", "traffic": "live"}
    assert shop.sample("servicekit_shed_requests_total", **shed) == 1
    assert shop.sample("servicekit_concurrency_limit") == 4
    timed = {"http_request_method": "GET", "http_route": "/hold", "traffic": "live"}
    count = "http_server_request_duration_seconds_count"
    assert shop.sample(count, http_response_status_code="503", **timed) == 1


async def test_shed_answers_are_sampled_in_the_access_log_not_all_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Thousands of refusals per second come exactly when the process is overloaded: a JSON
    # line each would add to the load. They are counted; their lines are sampled.
    shop = Shop(access_log_sample=0.0)
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        held = await shop.fill(client, 4)
        refused = [await client.get("/hold") for _ in range(3)]
        assert await finish(shop, held) == [200] * 4
        missing = await client.get("/nowhere")  # a client error: always written
    assert [r.status_code for r in refused] == [503] * 3
    lines = [line for line in capsys.readouterr().out.splitlines() if "servicekit.access" in line]
    assert missing.status_code == 404 and [line for line in lines if '"status": 404' in line]
    assert not [line for line in lines if '"status": 503' in line]
    shed = {"tier": "service", "reason": "concurrency", "traffic": "live"}
    assert shop.sample("servicekit_shed_requests_total", **shed) == 3


async def test_shadow_is_shed_first_and_critical_last() -> None:
    shop = Shop()
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        held = await shop.fill(client, 2)  # the degrade threshold
        shadow = await client.get("/hold", headers=SHADOW)
        held += await shop.fill(client, 2)  # the hard limit
        normal = await client.get("/hold")
        held += await shop.fill(client, 1, **CRITICAL)  # the reserved headroom
        critical_over = await client.get("/hold", headers=CRITICAL)
        statuses = await finish(shop, held)

    assert (shadow.status_code, normal.status_code, critical_over.status_code) == (503, 503, 503)
    assert statuses == [200] * 5
    assert (
        shop.sample(
            "servicekit_shed_requests_total", tier="service", reason="shadow", traffic="shadow"
        )
        == 1
    )


async def test_critical_priority_is_carried_to_the_next_hop_and_not_trusted_from_the_public() -> (
    None
):
    internal, public = Shop(), Shop(internal=False)
    async with lifespan_client(internal.app, headers=TOKEN) as client:
        internal.gate.set()
        critical = (await client.get("/hold", headers=CRITICAL)).json()["outgoing"]
        normal = (await client.get("/hold")).json()["outgoing"]
    async with lifespan_client(public.app) as client:
        held = await public.fill(client, 4)
        claimed = await client.get("/hold", headers=CRITICAL)
        await finish(public, held)

    assert critical["X-Request-Priority"] == "critical"
    assert "X-Request-Priority" not in normal
    assert claimed.status_code == 503  # a public caller cannot buy the headroom


async def test_reads_are_cached_and_a_write_is_read_back_at_once() -> None:
    shop = Shop()
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        first = await client.get("/products/mug")
        again = await client.get("/products/mug")
        reads_before_write = shop.db_reads
        await client.post("/products/mug/take")
        after_write = await client.get("/products/mug")

    assert first.json() == again.json() == {"sku": "mug", "available": 10}
    assert reads_before_write == 1  # the second read came from the cache
    assert "x-degraded" not in again.headers
    assert after_write.json()["available"] == 9 and shop.db_reads == 2
    results = {
        r: shop.sample("servicekit_cache_requests_total", cache="shop", result=r)
        for r in ("hit", "miss", "error")
    }
    assert results == {"hit": 1, "miss": 2, "error": 0}
    # The cached answer is timed under its route template, like the others.
    timed = {"http_request_method": "GET", "http_route": "/products/{sku}", "traffic": "live"}
    count = "http_server_request_duration_seconds_count"
    assert shop.sample(count, http_response_status_code="200", **timed) == 3


async def reads_in_flight(shop: Shop, client: httpx.AsyncClient, path: str, n: int) -> list[Any]:
    """`n` concurrent reads of `path` while reads are held; returns once all have arrived."""
    shop.reads_open.clear()
    tasks = [asyncio.ensure_future(client.get(path)) for _ in range(n)]
    for _ in range(1000):
        if shop.limiter.in_flight >= n:
            return tasks
        await asyncio.sleep(0)
    raise AssertionError(f"only {shop.limiter.in_flight} of {n} reads arrived")


async def held_reads(shop: Shop, client: httpx.AsyncClient, path: str, n: int) -> list[Any]:
    """The answers to `n` reads of `path` that all arrived before any read was let through."""
    tasks = await reads_in_flight(shop, client, path, n)
    shop.reads_open.set()
    return list(await asyncio.gather(*tasks))


async def test_concurrent_misses_of_one_key_read_the_database_once() -> None:
    shop = Shop(max_concurrency=64)
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        answers = await held_reads(shop, client, "/products/mug", 20)
        other = await client.get("/products/mug?page=2")  # another key: its own read

    assert {(a.status_code, a.text) for a in answers} == {(200, '{"sku":"mug","available":10}')}
    assert shop.db_reads == 2
    coalesced = shop.sample("servicekit_cache_requests_total", cache="shop", result="coalesced")
    assert coalesced == 19 and other.status_code == 200


async def test_an_expired_answer_is_served_while_one_request_reads_it_again() -> None:
    shop = Shop(max_concurrency=64, cache_ttl_seconds=0.05)
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        await client.get("/products/mug")  # stored: available 10
        await asyncio.sleep(0.06)  # expired, not written since
        refresh = await reads_in_flight(shop, client, "/products/mug", 1)
        # served at once, not queued behind the refresh (which waits until reads open)
        meanwhile = await asyncio.wait_for(client.get("/products/mug"), 2)
        shop.reads_open.set()
        (refreshed,) = await asyncio.gather(*refresh)
        await client.post("/products/mug/take")
        await asyncio.sleep(0.06)
        written = await reads_in_flight(shop, client, "/products/mug", 1)
        shop.reads_open.set()
        after_write = await client.get("/products/mug")
        await asyncio.gather(*written)

    assert meanwhile.status_code == refreshed.status_code == 200
    assert meanwhile.json() == refreshed.json() == {"sku": "mug", "available": 10}
    # a write went through: the old answer is never served, even while a read is under way
    assert after_write.json()["available"] == 9
    assert shop.db_reads == 3  # the first, the refresh, one read after the write (shared)


async def test_followers_of_an_uncacheable_answer_read_for_themselves() -> None:
    shop = Shop(max_concurrency=64)
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        answers = await held_reads(shop, client, "/products/retired", 5)

    assert [a.status_code for a in answers] == [404] * 5
    assert answers[-1].headers["content-type"] == "application/problem+json"
    assert shop.db_reads == 5
    assert shop.sample("servicekit_cache_requests_total", cache="shop", result="coalesced") == 0


async def test_a_write_during_a_read_starts_a_new_flight() -> None:
    shop = Shop(max_concurrency=64)
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        before = await reads_in_flight(shop, client, "/products/mug", 3)
        shop.reads_open.set()
        await client.post("/products/mug/take")  # the generation moves on
        after = await client.get("/products/mug")  # read your write: not the old flight's
        first = await asyncio.gather(*before)

    assert after.json()["available"] == 9
    assert {a.json()["available"] for a in first} <= {9, 10}


async def test_degraded_reads_are_served_stale_from_cache_and_marked(
    fake_clock: FakeClock,
) -> None:
    shop = Shop()
    shop.limiter.clock = fake_clock
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        await client.get("/products/mug")  # cached: available 10
        await client.post("/products/mug/take")  # now 9; the cached 10 is stale
        held = await shop.fill(client, 2)
        assert shop.limiter.degraded
        degraded = await client.get("/products/mug")
        uncached = await client.get("/products/kettle")  # no answer cached: admitted
        await finish(shop, held)
        fake_clock.advance(1.0)
        await client.get("/healthz")
        recovered = await client.get("/products/mug")

    assert degraded.status_code == 200
    assert degraded.headers["x-degraded"] == "cache"
    assert degraded.json()["available"] == 10  # stale: that is what degraded means
    assert "age" in degraded.headers
    assert uncached.status_code == 200 and "x-degraded" not in uncached.headers
    assert "x-degraded" not in recovered.headers and recovered.json()["available"] == 9
    assert shop.sample("servicekit_degraded_responses_total", reason="cache") == 1


async def test_degraded_mode_is_left_by_itself_when_idle() -> None:
    shop = Shop()
    shop.limiter.hold = 0.05
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        await finish(shop, await shop.fill(client, 2))
        assert shop.sample("servicekit_degraded_mode") == 1
        for _ in range(100):
            if not shop.limiter.degraded:
                break
            await asyncio.sleep(0.01)
    assert shop.sample("servicekit_degraded_mode") == 0


async def test_a_failing_cache_is_a_miss_never_an_error() -> None:
    shop = Shop()
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        shop.app.state.read_cache.backend = RedisBackend(FailingRedis())  # type: ignore[arg-type]
        read = await client.get("/products/mug")
        write = await client.post("/products/mug/take")

    assert (read.status_code, write.status_code) == (200, 200)
    assert shop.sample("servicekit_cache_requests_total", cache="shop", result="error") == 1


async def test_zero_turns_the_limiter_off() -> None:
    shop = Shop(max_concurrency=0)
    async with lifespan_client(shop.app, headers=TOKEN) as client:
        shop.gate.set()
        statuses = {
            r.status_code for r in await asyncio.gather(*(client.get("/hold") for _ in range(50)))
        }
    assert shop.app.state.concurrency_limiter is None
    assert statuses == {200}


def test_propagation_headers_carry_priority_only_when_critical() -> None:
    with context.request_scope({context.PRIORITY: context.CRITICAL}):
        assert kit.propagation_headers()[kit.contract.PRIORITY.name] == "critical"
    with context.request_scope():
        assert kit.contract.PRIORITY.name not in kit.propagation_headers()
