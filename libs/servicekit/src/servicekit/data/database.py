"""Database: one pooled async SQLAlchemy engine per service, and the unit-of-work session.

PostgreSQL runs on asyncpg with an explicit pool (size, overflow, bounded wait, pre-ping,
recycle) named after the service (`application_name`, visible in `pg_stat_activity`).
SQLite (aiosqlite, WAL mode, busy timeout) is the embedded default for `make up`.
A pool that cannot hand out a connection within `pool_timeout` fails fast with a 503.

A unit of work of dyed traffic (`context.SHADOW`) reads and writes the shadow tables
(servicekit.data.shadow): same pool, with the shadow translate map on its connection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Protocol, TypeVar

from fastapi import Depends, Request
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from servicekit import context
from servicekit.data import shadow
from servicekit.errors import UnavailableError
from servicekit.settings import ServiceSettings, async_database_url
from servicekit.telemetry.tracing import trace_queries

if TYPE_CHECKING:
    from servicekit.telemetry.metrics import Metrics

R = TypeVar("R")


class Base(DeclarativeBase):
    """Declarative base; each service keeps its own `MetaData` by subclassing it."""

    __abstract__ = True


def create_engine(
    url: str,
    *,
    name: str,
    pool_size: int = 10,
    max_overflow: int = 5,
    pool_timeout: float = 2.0,
    pool_recycle: int = 1800,
) -> AsyncEngine:
    """An async engine for `url` (plain postgresql:// and sqlite:/// accepted)."""
    url = async_database_url(url)
    if url.startswith("sqlite"):
        ensure_sqlite_directory(url)
        engine = create_async_engine(url, pool_pre_ping=True, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        # After the pragmas: the shadow database is attached to every connection.
        shadow.attach_sqlite_shadow(engine, url)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=pool_recycle,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": name}, "timeout": 5},
    )


def ensure_sqlite_directory(url: str) -> None:
    """`sqlite:///.run/x.db` works on a fresh clone: the folder is created if missing."""
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


class PoolObserver(Protocol):
    """Told how long each `Database.transaction` waited for its pooled connection."""

    def checkout(self, wait: float) -> None:
        """A connection was handed out after `wait` seconds (pre-ping included)."""

    def timeout(self) -> None:
        """A checkout gave up after `pool_timeout` (answered 503)."""


class PoolStatus(NamedTuple):
    """The pool right now: configured size, connections in use and idle, overflow, maximum."""

    size: int
    used: int
    idle: int
    overflow: int
    max: int


class PoolMetrics:
    """Exports one database's pool: waits and timeouts as observed, sizes read at scrape time.

    `db_client_connection_count{state=used|idle}`, `..._max`, `..._overflow` are gauges whose
    value is read from the pool when Prometheus scrapes; `..._wait_time_seconds` and
    `..._timeouts` come from `Database.transaction` (this is a `PoolObserver`).
    """

    def __init__(self, metrics: Metrics, name: str, status: Callable[[], PoolStatus]) -> None:
        self._wait = metrics.db_wait_time.labels(name)
        self._timeouts = metrics.db_timeouts.labels(name)
        metrics.db_connections.labels(name, "used").set_function(lambda: status().used)
        metrics.db_connections.labels(name, "idle").set_function(lambda: status().idle)
        metrics.db_connections_max.labels(name).set_function(lambda: status().max)
        metrics.db_overflow.labels(name).set_function(lambda: status().overflow)

    def checkout(self, wait: float) -> None:
        """Record one checkout wait."""
        self._wait.observe(wait)

    def timeout(self) -> None:
        """Count one checkout that gave up."""
        self._timeouts.inc()


class Database:
    """The engine and session factory of one service."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        #: Sessions of dyed traffic: every table translated to its shadow twin.
        self.shadow_sessionmaker = async_sessionmaker(
            shadow.shadow_engine(engine), expire_on_commit=False
        )
        # A span per statement of a sampled request (operation and table, no parameters).
        trace_queries(engine)
        # Fail closed: a dyed write that would not land in a shadow table raises.
        shadow.guard_dyed_writes(engine)
        #: Checkout timing goes to these (read-only guard, pool metrics); added at start-up.
        self.observers: list[PoolObserver] = []

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Database:
        """Build from a service's settings (call in the lifespan, never at import)."""
        return cls(
            create_engine(
                settings.database_url,
                name=settings.service_name,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout,
                pool_recycle=settings.db_pool_recycle,
            )
        )

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded default (some SQL differs, e.g. upserts)."""
        return self.engine.dialect.name == "sqlite"

    async def ping(self) -> None:
        """Run `SELECT 1`; raises when the database is unreachable."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def transaction(self, *, dyed: bool | None = None) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error.

        Its tables are the shadow ones when the context is dyed (`dyed` overrides it).
        """
        if dyed is None:
            dyed = bool(context.get(context.SHADOW))
        maker = self.shadow_sessionmaker if dyed else self.sessionmaker
        async with maker() as session, translate_db_errors(), session.begin():
            if self.observers:
                await self._checkout(session)
            yield session

    def unit_of_work(
        self, repository: Callable[[AsyncSession], R]
    ) -> Callable[[], AbstractAsyncContextManager[R]]:
        """A service's unit of work: each call opens a transaction and yields
        `repository(session)` over it, committed on a clean exit, rolled back on an error."""

        @asynccontextmanager
        async def open_transaction() -> AsyncIterator[R]:
            async with self.transaction() as session:
                yield repository(session)

        return open_transaction

    async def _checkout(self, session: AsyncSession) -> None:
        # SQLAlchemy's pool events fire once a connection is out, never when the wait starts:
        # the wait is timed here by taking the connection up front (the session would take it
        # at its first statement anyway).
        started = time.perf_counter()
        try:
            await session.connection()
        except PoolTimeoutError:
            for observer in self.observers:
                observer.timeout()
            raise
        wait = time.perf_counter() - started
        for observer in self.observers:
            observer.checkout(wait)

    def pool_status(self) -> PoolStatus:
        """Sizes read from the engine's current pool (it is replaced on `dispose`)."""
        pool: Any = self.engine.pool
        size = int(pool.size()) if hasattr(pool, "size") else 0
        used = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
        idle = int(pool.checkedin()) if hasattr(pool, "checkedin") else 0
        overflow = max(0, int(pool.overflow())) if hasattr(pool, "overflow") else 0
        # QueuePool keeps max_overflow private; -1 means unbounded, shown as 0 extra.
        extra = max(0, int(getattr(pool, "_max_overflow", 0)))
        return PoolStatus(size, used, idle, overflow, size + extra)

    async def dispose(self) -> None:
        """Close every pooled connection (lifespan exit)."""
        await self.engine.dispose()


@asynccontextmanager
async def translate_db_errors() -> AsyncIterator[None]:
    """Pool exhaustion and lost connections become a 503 with Retry-After, not a 500."""
    try:
        yield
    except PoolTimeoutError as exc:
        raise UnavailableError("database pool exhausted; retry shortly", retry_after=1) from exc
    except (OperationalError, DBAPIError) as exc:
        if (
            getattr(exc, "connection_invalidated", False)
            or isinstance(exc, OperationalError)
            or _is_unavailable_sqlstate(exc)
        ):
            raise UnavailableError("database unavailable; retry shortly", retry_after=1) from exc
        raise
    except (ConnectionError, OSError) as exc:
        raise UnavailableError("database unavailable; retry shortly", retry_after=1) from exc


#: SQLSTATEs that mean "the server is not there right now", not "your SQL is wrong": class 08
#: (connection exceptions) and 57P01-57P03 (admin shutdown, crash shutdown, starting up). asyncpg
#: reports a restarting server as 57P03 on a fresh connection, which is not an invalidation.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def _is_unavailable_sqlstate(exc: DBAPIError) -> bool:
    for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
        sqlstate = str(getattr(error, "sqlstate", "") or "")
        if sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES:
            return True
    return False


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.state.database
    async with database.transaction() as session:
        yield session


#: The request is the unit of work: committed when the handler returns (before the response
#: is sent, hence scope="function"), rolled back when it raises. Handlers never commit.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
