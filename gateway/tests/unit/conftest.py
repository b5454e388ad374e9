"""Gateway unit fixtures: the app over an `httpx.MockTransport` standing in for both upstreams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from gateway.config import GatewaySettings
from gateway.main import create_app
from servicekit.testing import lifespan_client

INVENTORY = "inventory.internal:9002"
ORDER = "order.internal:9001"
KEYS = "alice-key:customer-alice,bob-key:customer-bob,lt-key:customer-lt:loadtest"
Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeUpstreams:
    """Both upstreams in one transport: records every request, answers with `handler`."""

    requests: list[httpx.Request] = field(default_factory=list)
    handler: Handler = field(default=lambda request: httpx.Response(200, json={"ok": True}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        assert self.requests, "no request reached an upstream"
        return self.requests[-1]


def make_settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "api_keys": KEYS,
        "service_token": "s3rvice-token-for-tests",
        "admin_token": "admin-token-for-tests",
        "inventory_url": f"http://{INVENTORY}",
        "order_url": f"http://{ORDER}",
        "max_body_bytes": 2048,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
def upstreams() -> FakeUpstreams:
    return FakeUpstreams()


@pytest_asyncio.fixture
async def client(upstreams: FakeUpstreams) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(), transport=httpx.MockTransport(upstreams))
    async with lifespan_client(app, headers={"Authorization": "Bearer alice-key"}) as c:
        yield c
