"""Downstreams: every client of a service with its credential, metrics and breaker."""

from __future__ import annotations

import time
from typing import ClassVar

import httpx
from pydantic_settings import SettingsConfigDict
from servicekit import Downstreams, Metrics, ServiceSettings
from servicekit.edge.credential import verify_service_token


class ShopSettings(ServiceSettings):
    service_name: ClassVar[str] = "shop"
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")


async def test_clients_carry_the_credential_and_share_the_registry() -> None:
    settings = ShopSettings(_env_file=None, service_token="s" * 32, http_timeout=1.5)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    downstreams = Downstreams(
        settings, metrics=Metrics("shop"), transport=httpx.MockTransport(answer)
    )
    payment = downstreams.client("payment", "http://payment.internal")
    order = downstreams.client("order", "http://order.internal", timeout=9, slow_call_seconds=4)
    await downstreams.start()
    try:
        await payment.request("GET", "/charges/1")
    finally:
        await downstreams.aclose()

    claims = verify_service_token(
        seen[0].headers["x-service-token"], ["s" * 32], audience="payment", now=time.time()
    )
    assert claims.caller == "shop"
    assert payment.breaker is downstreams.breakers.get("payment")
    assert order.breaker is downstreams.breakers.get("order")
    assert order.breaker.config.slow_call_seconds == 4  # per-dependency override
    assert payment.breaker.config.slow_call_seconds != 4
    assert payment.timeout == 1.5 and order.timeout == 9  # <PREFIX>_HTTP_TIMEOUT by default
