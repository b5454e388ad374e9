"""Gateway integration fixtures: a private redis-server a test may kill, restart or freeze;
the gateway in process in front of the real payment and inventory apps.

The shared Redis (127.0.0.1:6379, the `redis_url` fixture) is never stopped; a test that
breaks Redis starts its own on a free port in its temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis
from asgi_lifespan import LifespanManager
from gateway.config import GatewaySettings
from gateway.main import create_app
from inventory.config import InventorySettings
from inventory.main import create_app as create_inventory
from payment.config import PaymentSettings
from payment.main import create_app as create_payment
from servicekit.testing import MakeDatabase, lifespan_client

SECRET = "integration-service-secret"
ADMIN_TOKEN = "admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own: start, kill, restart on the same port, pause."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is required on PATH for the Redis outage tests")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        pytest.fail(f"private redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class RouteByHost(httpx.AsyncBaseTransport):
    """In-process apps by host; any other host refuses the connection, as a dead one would."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self.apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        app = self.apps.get(request.url.host)
        if app is None:
            raise httpx.ConnectError("connection refused", request=request)
        return await app.handle_async_request(request)


@pytest_asyncio.fixture
async def gateway(make_database: MakeDatabase) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in front of real payment and inventory apps, each on a fresh PostgreSQL
    database; the signed service credential is checked for real. Order is not there."""
    common = {"environment": "test", "service_token": SECRET}
    payment = create_payment(
        PaymentSettings(
            _env_file=None, database_url=await make_database("postgresql", ["payment"]), **common
        )
    )
    inventory = create_inventory(
        InventorySettings(
            _env_file=None,
            database_url=await make_database("postgresql", ["inventory"]),
            reservation_sweep_seconds=3600,
            **common,
        )
    )
    async with AsyncExitStack() as stack:
        routes = {}
        for host, app in (("payment.test", payment), ("inventory.test", inventory)):
            manager = await stack.enter_async_context(LifespanManager(app))
            routes[host] = httpx.ASGITransport(app=manager.app)
        settings = GatewaySettings(
            _env_file=None,
            api_keys="alice-key:customer-alice",
            admin_token=ADMIN_TOKEN,
            payment_url="http://payment.test",
            inventory_url="http://inventory.test",
            order_url="http://order.test",
            **common,
        )
        app = create_app(settings, transport=RouteByHost(routes))
        yield await stack.enter_async_context(lifespan_client(app))
