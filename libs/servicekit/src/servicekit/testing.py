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

from servicekit.data.migrations import upgrade

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    """A clock that moves only when told; callable like `time.monotonic`."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    """A `FakeClock` at t=1000 s; inject it where code takes a `clock` callable."""
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


class _PostgresDatabases:
    """Per-test PostgreSQL databases, cheap enough to use everywhere.

    A template is migrated once per set of packages. A test gets a database cloned from it;
    when the test ends the database goes back to a free list, and the next test that takes it
    truncates every table first (isolation is checked at the start, so a test that crashed in
    teardown cannot leak rows). Cloning costs ~0.5-1.5 s, truncating a few milliseconds.
    Everything is dropped at session end.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.templates: dict[tuple[str, ...], str] = {}
        self.free: dict[tuple[str, ...], list[str]] = {}
        self.all: list[str] = []

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _template(self, packages: tuple[str, ...]) -> str:
        if packages not in self.templates:
            name = f"tmpl_{'_'.join(packages) or 'empty'}_{secrets.token_hex(4)}"
            await self._admin(f'CREATE DATABASE "{name}"')
            self.all.append(name)
            for package in packages:
                await asyncio.to_thread(upgrade, _with_database(self.admin_url, name), package)
            self.templates[packages] = name
        return self.templates[packages]

    async def _truncate(self, name: str) -> bool:
        conn = await asyncpg.connect(_with_database(self.admin_url, name))
        try:
            await conn.execute("SET lock_timeout = '5s'")
            # Live and shadow tables (servicekit.data.shadow) alike.
            tables = await conn.fetch(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS t "
                "FROM pg_tables WHERE schemaname IN ('public', 'shadow') "
                "AND tablename NOT LIKE 'alembic_version%'"
            )
            if tables:
                names = ", ".join(row["t"] for row in tables)
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        except asyncpg.PostgresError:
            return False
        finally:
            await conn.close()
        return True

    async def acquire(self, packages: tuple[str, ...]) -> str:
        free = self.free.setdefault(packages, [])
        while free:
            name = free.pop()
            if await self._truncate(name):
                return name
        template = await self._template(packages)
        name = f"t_{secrets.token_hex(6)}"
        # FILE_COPY clones a small database several times faster than the default WAL_LOG.
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        self.all.append(name)
        return name

    def release(self, packages: tuple[str, ...], name: str) -> None:
        self.free.setdefault(packages, []).append(name)

    def drop_all(self) -> None:
        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                for name in reversed(self.all):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        if self.all:
            _run_in_thread(drop)


@pytest.fixture(scope="session")
def _postgres_databases(postgres_url: str) -> Iterator[_PostgresDatabases]:
    databases = _PostgresDatabases(postgres_url)
    yield databases
    databases.drop_all()


MakeDatabase = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture
async def make_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeDatabase]:
    """`await make_database("postgresql", ["order"])` -> URL of a fresh migrated database.

    The database is empty but for what the migrations create; it is this test's alone.
    """
    taken: list[tuple[tuple[str, ...], str]] = []
    pool: _PostgresDatabases | None = None

    async def make(kind: str, packages: list[str] | tuple[str, ...]) -> str:
        nonlocal pool
        if kind == "sqlite":
            path = tmp_path / f"db_{secrets.token_hex(4)}.sqlite"
            url = f"sqlite:///{path}"
            for package in packages:
                await asyncio.to_thread(upgrade, url, package)
            return url
        if kind != "postgresql":
            raise ValueError(f"unknown database kind {kind!r}")
        admin_url: str = request.getfixturevalue("postgres_url")
        pool = request.getfixturevalue("_postgres_databases")
        key = tuple(packages)
        name = await pool.acquire(key)
        taken.append((key, name))
        return _with_database(admin_url, name)

    yield make
    if pool is not None:
        for key, name in taken:
            pool.release(key, name)


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
