"""Fault injection: the injector with a seeded Random and a fake sleep, and the fault routes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httpx
import pytest
import servicekit as kit
from fastapi import APIRouter, Depends, FastAPI
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from servicekit.faults import (
    MAX_LATENCY_MS,
    FaultInjector,
    Faults,
    InjectedFaultError,
    faults_router,
    inject_faults,
)
from servicekit.testing import lifespan_client

from .conftest import TOKEN


class FakeSleep:
    """Records the delays asked for instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def injector(faults: Faults | None = None, *, seed: int = 1) -> tuple[FaultInjector, FakeSleep]:
    sleep = FakeSleep()
    return FaultInjector(faults, service="demo", rng=random.Random(seed), sleep=sleep), sleep


async def _failures(subject: FaultInjector, calls: int) -> list[int]:
    failed = []
    for i in range(calls):
        try:
            await subject.apply()
        except InjectedFaultError:
            failed.append(i)
    return failed


# --- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"latency_ms": -1},
        {"latency_ms": MAX_LATENCY_MS + 1},
        {"hang": "sometimes"},
        {"hang": "yes"},
        {"latency_ms": 1.5},
        {"error_rate": 0.1, "surprise": True},
    ],
)
def test_out_of_bounds_or_unknown_fields_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Faults.model_validate(body)


def test_no_fault_is_inactive_and_any_knob_is_active() -> None:
    assert not Faults().active
    assert Faults(error_rate=0.01).active
    assert Faults(latency_ms=1).active
    assert Faults(hang=True).active


# --- applying ---------------------------------------------------------------------------------


async def test_no_faults_neither_sleeps_nor_fails() -> None:
    subject, sleep = injector()
    assert await _failures(subject, 100) == []
    assert sleep.calls == []


async def test_latency_sleeps_the_configured_milliseconds_before_an_error() -> None:
    subject, sleep = injector(Faults(error_rate=1.0, latency_ms=250))
    with pytest.raises(InjectedFaultError):
        await subject.apply()
    assert sleep.calls == [0.25]


async def test_error_rate_one_always_fails_with_503_and_retry_after() -> None:
    subject, _ = injector(Faults(error_rate=1.0))
    for _ in range(50):
        with pytest.raises(InjectedFaultError) as caught:
            await subject.apply()
        assert caught.value.status == 503
        assert caught.value.slug == "injected-fault"
        assert caught.value.headers["Retry-After"] == "1"


async def test_error_rate_fails_that_share_deterministically_for_a_seed() -> None:
    first = await _failures(injector(Faults(error_rate=0.3), seed=42)[0], 1000)
    again = await _failures(injector(Faults(error_rate=0.3), seed=42)[0], 1000)
    assert first == again
    assert 250 <= len(first) <= 350


async def test_hang_holds_calls_until_it_is_cleared() -> None:
    subject, sleep = injector(Faults(hang=True))
    held = [asyncio.create_task(subject.apply()) for _ in range(5)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in held)
    subject.clear()
    await asyncio.gather(*held)  # released, and nothing else is in force
    assert sleep.calls == []


async def test_released_calls_apply_the_faults_in_force_at_release() -> None:
    subject, sleep = injector(Faults(hang=True))
    held = asyncio.create_task(subject.apply())
    await asyncio.sleep(0)
    subject.set(Faults(hang=True, latency_ms=5))  # still hanging: keeps holding
    await asyncio.sleep(0)
    assert not held.done()
    subject.set(Faults(error_rate=1.0, latency_ms=20))
    with pytest.raises(InjectedFaultError):
        await held
    assert sleep.calls == [0.02]


async def test_a_change_takes_effect_on_the_next_call() -> None:
    subject, _ = injector()
    await subject.apply()
    subject.set(Faults(error_rate=1.0))
    with pytest.raises(InjectedFaultError):
        await subject.apply()
    assert subject.clear() == Faults()
    await subject.apply()


class FaultyDemoSettings(kit.ServiceSettings):
    service_name: ClassVar[str] = "faulty"
    model_config = SettingsConfigDict(env_prefix="FAULTY_", extra="ignore")
    fault_error_rate: float = 0.0
    fault_latency_ms: int = 0
    fault_hang: bool = False


def test_start_up_faults_come_from_settings(caplog: pytest.LogCaptureFixture) -> None:
    settings = FaultyDemoSettings(fault_error_rate=0.25, fault_latency_ms=40, fault_hang=True)
    subject = FaultInjector.from_settings(settings, service="faulty")
    assert subject.faults == Faults(error_rate=0.25, latency_ms=40, hang=True)
    assert "faults injected at start on faulty" in caplog.text


# --- the routes, on a kit app -------------------------------------------------------------------


@asynccontextmanager
async def faulty_client(subject: FaultInjector, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    domain = APIRouter(dependencies=[Depends(inject_faults)])

    @domain.get("/things")
    async def list_things() -> list[str]:
        return ["thing"]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"faults": subject}

    app = kit.create_service_app(
        FaultyDemoSettings(), title="faulty", lifespan=lifespan, routers=[domain, faults_router]
    )
    async with lifespan_client(app, headers=TOKEN | headers) as client:
        yield client


async def test_put_get_delete_turn_the_faults_of_a_running_app() -> None:
    subject, _ = injector()
    async with faulty_client(subject) as client:
        assert (await client.get("/things")).status_code == 200
        put = await client.put("/internal/faults", json={"error_rate": 1.0})
        assert put.status_code == 200
        assert put.json() == {"error_rate": 1.0, "latency_ms": 0, "hang": False}
        failed = await client.get("/things")
        assert failed.status_code == 503
        assert failed.headers["content-type"] == "application/problem+json"
        assert failed.headers["retry-after"] == "1"
        assert failed.json()["type"] == "/problems/injected-fault"
        # Health, metrics and the fault routes themselves are never faulted.
        for path in ("/healthz", "/metrics", "/internal/faults"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/internal/faults")).json()["error_rate"] == 1.0
        deleted = await client.delete("/internal/faults")
        assert deleted.json() == {"error_rate": 0.0, "latency_ms": 0, "hang": False}
        assert (await client.get("/things")).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"error_rate": 2}, 422),
        ({"latency_ms": -5}, 422),
        ({"error_rate": 0.5, "extra": 1}, 422),
        ("not json", 400),
    ],
)
async def test_bad_fault_bodies_are_problems_and_change_nothing(body: Any, status: int) -> None:
    subject, _ = injector(Faults(latency_ms=1))
    async with faulty_client(subject) as client:
        if isinstance(body, str):
            response = await client.put(
                "/internal/faults", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = await client.put("/internal/faults", json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert subject.faults == Faults(latency_ms=1)


async def test_fault_routes_require_the_service_credential() -> None:
    subject, _ = injector()
    async with faulty_client(subject, **{"X-Service-Token": "wrong"}) as client:
        assert (await client.put("/internal/faults", json={"hang": True})).status_code == 401
        assert (await client.delete("/internal/faults")).status_code == 401
    assert subject.faults == Faults()
