"""pytest plugin (registered through the `pytest11` entry point) with the kit's fixtures.

- `fake_clock`: an injectable clock, so expiry, breakers and limiters are tested without sleeping.
- `postgres_url`, `redis_url`: the real servers of this machine. An unreachable server fails the
  test loudly; it is never skipped.
- `make_database`: a fresh, migrated database per test, on PostgreSQL (cloned from a template
  migrated once per session) or SQLite (a file in the test's temp dir).
- `lifespan_client(app)`: an `httpx.AsyncClient` over `ASGITransport` with the lifespan run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager

from servicekit.migrations import upgrade

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    """A clock that moves only when told; callable like `time.monotonic`."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


def _run_in_thread(make: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine to completion on a private loop (fixtures may be set up inside a loop)."""
    errors: list[BaseException] = []

    def target() -> None:
        async def main() -> None:
            await make()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Admin URL of the real PostgreSQL (SERVICEKIT_TEST_POSTGRES_URL); fails if unreachable."""
    url = os.environ.get("SERVICEKIT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:
        _run_in_thread(probe)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is required at {url} and is not reachable: {exc!r}. "
            "Start it or set SERVICEKIT_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis (SERVICEKIT_TEST_REDIS_URL); fails if unreachable."""
    import redis

    url = os.environ.get("SERVICEKIT_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception as exc:
        pytest.fail(
            f"Redis is required at {url} and is not reachable: {exc!r}. "
            "Start it or set SERVICEKIT_TEST_REDIS_URL.",
            pytrace=False,
        )
    return url


class _Templates:
    """Migrated template databases, one per set of packages, dropped at session end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: dict[tuple[str, ...], str] = {}

    async def template(self, packages: tuple[str, ...]) -> str:
        if packages not in self.names:
            name = f"tmpl_{'_'.join(packages)}_{secrets.token_hex(4)}"
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            for package in packages:
                await asyncio.to_thread(upgrade, _with_database(self.admin_url, name), package)
            self.names[packages] = name
        return self.names[packages]

    def drop_all(self) -> None:
        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                for name in self.names.values():
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        if self.names:
            _run_in_thread(drop)


@pytest.fixture(scope="session")
def _postgres_templates(postgres_url: str) -> Iterator[_Templates]:
    templates = _Templates(postgres_url)
    yield templates
    templates.drop_all()


MakeDatabase = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture
async def make_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeDatabase]:
    """`await make_database("postgresql", ["order"])` -> URL of a fresh migrated database."""
    created: list[tuple[str, str]] = []

    async def make(kind: str, packages: list[str] | tuple[str, ...]) -> str:
        if kind == "sqlite":
            path = tmp_path / f"db_{secrets.token_hex(4)}.sqlite"
            url = f"sqlite:///{path}"
            for package in packages:
                await asyncio.to_thread(upgrade, url, package)
            return url
        if kind != "postgresql":
            raise ValueError(f"unknown database kind {kind!r}")
        admin_url: str = request.getfixturevalue("postgres_url")
        templates: _Templates = request.getfixturevalue("_postgres_templates")
        template = await templates.template(tuple(packages))
        name = f"t_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        created.append((admin_url, name))
        return _with_database(admin_url, name)

    yield make
    for admin_url, name in created:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@asynccontextmanager
async def lifespan_client(
    app: Any, *, headers: dict[str, str] | None = None, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client driving `app` in-process, with its lifespan started and stopped."""
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=headers or {}
        ) as client:
            yield client
