"""Database: one pooled async SQLAlchemy engine per service, and the unit-of-work session.

PostgreSQL runs on asyncpg with an explicit pool (size, overflow, bounded wait, pre-ping,
recycle) named after the service (`application_name`, visible in `pg_stat_activity`).
SQLite (aiosqlite, WAL mode, busy timeout) is the embedded default for `make up`.
A pool that cannot hand out a connection within `pool_timeout` fails fast with a 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

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

from servicekit.errors import UnavailableError
from servicekit.settings import ServiceSettings, async_database_url


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


class Database:
    """The engine and session factory of one service."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

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
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self.sessionmaker() as session, translate_db_errors(), session.begin():
            yield session

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
        if getattr(exc, "connection_invalidated", False) or isinstance(exc, OperationalError):
            raise UnavailableError("database unavailable; retry shortly", retry_after=1) from exc
        raise
    except (ConnectionError, OSError) as exc:
        raise UnavailableError("database unavailable; retry shortly", retry_after=1) from exc


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.state.database
    async with database.transaction() as session:
        yield session


#: The request is the unit of work: committed when the handler returns (before the response
#: is sent, hence scope="function"), rolled back when it raises. Handlers never commit.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
