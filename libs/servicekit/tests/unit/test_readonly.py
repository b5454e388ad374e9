"""Data tier: read-only mode from pool waits and statement latency, with hysteresis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import servicekit as kit
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict
from servicekit.admission.readonly import ReadOnlyGuard
from servicekit.testing import FakeClock, lifespan_client

TOKEN = {"X-Service-Token": "dev-service-token"}


def guard(clock: FakeClock, **overrides: Any) -> ReadOnlyGuard:
    values: dict[str, Any] = {
        "pool_wait": 0.2,
        "db_latency": 1.0,
        "window": 5.0,
        "min_dwell": 5.0,
        "min_samples": 10,
    } | overrides
    return ReadOnlyGuard(clock=clock, **values)


def observe(
    g: ReadOnlyGuard, clock: FakeClock, n: int, *, wait: float = 0.0, sql: float = 0.0
) -> None:
    for _ in range(n):
        g.checkout(wait)
        g.statement(sql)
        clock.advance(0.01)


def test_saturated_pool_enters_read_only(fake_clock: FakeClock) -> None:
    g = guard(fake_clock)
    observe(g, fake_clock, 20, wait=0.001)
    assert not g.read_only
    observe(g, fake_clock, 20, wait=0.3)
    fake_clock.advance(EVERY)
    assert g.read_only


def test_slow_statements_enter_read_only(fake_clock: FakeClock) -> None:
    g = guard(fake_clock)
    observe(g, fake_clock, 20, sql=1.5)
    assert g.read_only


def test_pool_timeouts_count_as_endless_waits(fake_clock: FakeClock) -> None:
    g = guard(fake_clock)
    for _ in range(10):
        g.timeout()
    fake_clock.advance(EVERY)
    assert g.read_only


def test_a_few_slow_samples_are_not_enough(fake_clock: FakeClock) -> None:
    g = guard(fake_clock)
    observe(g, fake_clock, 9, wait=5.0)  # below min_samples
    assert not g.read_only
    busy = guard(fake_clock)
    observe(busy, fake_clock, 300, wait=0.001)
    observe(busy, fake_clock, 14, wait=5.0)  # under 5 %: the p95 stays low
    fake_clock.advance(EVERY)
    assert not busy.read_only


def test_leaves_only_after_the_dwell_and_below_half_the_threshold(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="servicekit.admission.readonly")
    g = guard(fake_clock)
    observe(g, fake_clock, 20, wait=0.5)
    assert g.read_only
    fake_clock.advance(5.0)  # the slow samples aged out of the window
    observe(g, fake_clock, 20, wait=0.15)  # below the threshold, above half of it
    assert g.read_only
    fake_clock.advance(5.0)
    observe(g, fake_clock, 20, wait=0.05)
    fake_clock.advance(EVERY)
    assert not g.read_only
    messages = [r.getMessage().split(":")[0].split(" after")[0] for r in caplog.records]
    assert messages == ["entering read-only mode", "leaving read-only mode"]


def test_stays_read_only_for_the_minimum_dwell_even_when_calm(fake_clock: FakeClock) -> None:
    g = guard(fake_clock, window=1.0)
    observe(g, fake_clock, 20, sql=2.0)
    assert g.read_only
    assert g.retry_after() == 5
    fake_clock.advance(2.0)  # no samples left: calm, but the dwell is not over
    assert g.read_only and g.retry_after() == 3
    fake_clock.advance(3.0)
    assert not g.read_only


EVERY = 0.1  # servicekit.admission.readonly.EVALUATE_EVERY


class DemoSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "shop"
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")


def build_app() -> FastAPI:
    router = APIRouter()
    writes: list[str] = []

    @router.get("/items")
    async def list_items() -> list[str]:
        return writes

    @router.post("/items", status_code=201)
    async def create_item() -> None:
        writes.append("item")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}

    app = kit.create_service_app(DemoSettings(), title="shop", lifespan=lifespan, routers=[router])
    app.state.writes = writes
    return app


async def test_read_only_refuses_writes_but_not_reads_or_critical_calls(
    fake_clock: FakeClock,
) -> None:
    app = build_app()
    g: ReadOnlyGuard = app.state.read_only
    g.clock = fake_clock
    g.min_samples = 1
    async with lifespan_client(app, headers=TOKEN) as client:
        g.timeout()
        refused = await client.post("/items")
        read = await client.get("/items")
        critical = await client.post("/items", headers={"X-Request-Priority": "critical"})
        metrics = (await client.get("/metrics")).text

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["type"] == "/problems/read-only"
    assert read.status_code == 200 and critical.status_code == 201
    assert app.state.writes == ["item"]  # only the critical call wrote
    assert "servicekit_read_only_mode 1.0" in metrics
    assert (
        'servicekit_shed_requests_total{reason="read_only",tier="data",traffic="live"} 1.0'
        in metrics
    )


async def test_an_operator_holds_read_only_and_releases_it() -> None:
    app = build_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        held = await client.put("/internal/read-only")
        refused = await client.post("/items")
        metrics = (await client.get("/metrics")).text
        # The release is itself a write made in read-only mode: it must get through.
        released = await client.delete("/internal/read-only")
        written = await client.post("/items")
        anonymous = await client.put("/internal/read-only", headers={"X-Service-Token": ""})

    assert held.json() == {"read_only": True, "forced": True}
    assert refused.status_code == 503 and refused.json()["type"] == "/problems/read-only"
    assert "servicekit_read_only_mode 1.0" in metrics
    assert released.json() == {"read_only": False, "forced": False}
    assert written.status_code == 201
    assert anonymous.status_code == 401
