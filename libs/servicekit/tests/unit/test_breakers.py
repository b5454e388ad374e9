"""Breakers from settings: the `<PREFIX>_BREAKER_*` variables, one breaker per dependency."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from servicekit import BreakerConfig, Breakers, Metrics, ServiceSettings
from servicekit.downstream.breaker_registry import SharedBreakerState


class ShopSettings(ServiceSettings):
    service_name: ClassVar[str] = "shop"
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")


def test_config_comes_from_the_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "FAILURE_RATE": "5",
        "MIN_CALLS": "40",
        "WINDOW_SECONDS": "30",
        "SLOW_CALL_SECONDS": "0.8",
        "SLOW_CALL_RATE": "60",
        "CONSECUTIVE_FAILURES": "7",
        "RESET_SECONDS": "15",
        "HALF_OPEN_PROBES": "2",
        "WEBHOOK_URL": "http://hooks.internal/breaker",
    }.items():
        monkeypatch.setenv(f"SHOP_BREAKER_{name}", value)
    settings = ShopSettings(_env_file=None)  # type: ignore[call-arg]
    assert BreakerConfig.from_settings(settings) == BreakerConfig(
        failure_rate=5,
        min_calls=40,
        window_seconds=30,
        slow_call_seconds=0.8,
        slow_call_rate=60,
        consecutive_failures=7,
        reset_seconds=15,
        half_open_probes=2,
    )
    breakers = Breakers.from_settings(settings)
    assert breakers.webhook is not None and breakers.webhook.service == "shop"
    assert breakers.webhook.url == "http://hooks.internal/breaker"
    assert breakers.shared is None  # memory storage by default


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SHOP_BREAKER_STORAGE": "redis"}, "SHOP_BREAKER_STORAGE=redis needs SHOP_REDIS_URL"),
        ({"SHOP_BREAKER_WEBHOOK_URL": "file:///etc/passwd"}, "must be an http"),
        ({"SHOP_BREAKER_FAILURE_RATE": "0"}, "greater than 0"),
        ({"SHOP_BREAKER_SLOW_CALL_RATE": "101"}, "less than or equal to 100"),
        ({"SHOP_BREAKER_STORAGE": "etcd"}, "memory"),
    ],
)
def test_refuses_bad_breaker_settings(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        ShopSettings(_env_file=None)  # type: ignore[call-arg]


def test_one_breaker_per_dependency_with_its_series_and_overrides() -> None:
    metrics = Metrics("shop")
    breakers = Breakers("shop", BreakerConfig(slow_call_seconds=1.0), metrics=metrics)
    payment = breakers.get("payment")
    order = breakers.get("order", slow_call_seconds=4.0)
    assert breakers.get("payment") is payment
    assert payment.config.slow_call_seconds == 1.0 and order.config.slow_call_seconds == 4.0
    for dependency in ("payment", "order"):
        state = metrics.registry.get_sample_value(
            "servicekit_breaker_state", {"dependency": dependency}
        )
        assert state == 0


class StuckRedis:
    """A Redis whose reads never end, and whose cancelled read surfaces as a timeout.

    On Python 3.11, a cancel that lands as a redis-py command times out can come out as
    TimeoutError: the sync task must stop all the same.
    """

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise TimeoutError("Timeout reading from redis") from None
        return []


async def test_shared_state_stops_even_when_redis_swallows_the_cancel() -> None:
    shared = SharedBreakerState(StuckRedis(), service="shop", interval=0.01)  # type: ignore[arg-type]
    breakers = Breakers("shop", shared=shared)
    breakers.get("payment")
    await breakers.start()
    for _ in range(3):
        await asyncio.sleep(0)  # let the sync task get into the stuck read
    await asyncio.wait_for(breakers.aclose(), 3)
    assert shared._task is None
