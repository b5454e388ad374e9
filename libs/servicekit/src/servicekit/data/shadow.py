"""Shadow tables: where dyed (load-test) traffic reads and writes.

Every table of a service exists twice: live (the default schema) and shadow (schema
`shadow`: a PostgreSQL schema, or on SQLite a database file `<db>.shadow` ATTACHed as
`shadow` on every connection). The migrations build both (`servicekit.data.migrations`).

A unit of work picks its side from the request context (`context.SHADOW`, set by the edge
only for callers allowed to dye): a dyed one runs on a connection whose execution options
carry `schema_translate_map={None: "shadow"}`, so every ORM and Core statement names the
shadow table, with no change to the SQL a service writes.

It fails closed. `guard_dyed_writes` refuses, before it reaches the driver, any write made
while the context is dyed unless it is a compiled INSERT/UPDATE/DELETE whose table the
translate map sends to `shadow`: a raw SQL string, a table with a schema of its own, or a
connection opened around `Database.transaction` all raise `ShadowWriteError` (a 500
problem, and the transaction is rolled back, so nothing live is written).

Every table also carries a `traffic` column (`TrafficMarked`), written from the context on
insert and update: a row that dyed traffic wrote into a live table says so, and the pollution
audit (`audit`) finds it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import String, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.ddl import ExecutableDDLElement
from sqlalchemy.sql.dml import UpdateBase

from servicekit import context
from servicekit.errors import ServiceError
from servicekit.settings import async_database_url
from servicekit.telemetry.metrics import traffic

T = TypeVar("T")

#: The schema (PostgreSQL) or attached database (SQLite) holding the shadow tables.
SCHEMA = "shadow"
#: Execution option of a dyed unit of work: unqualified tables become `shadow.<table>`.
TRANSLATE_MAP: dict[str | None, str] = {None: SCHEMA}
#: Execution option naming the side a connection serves (read by the guard).
TRAFFIC_OPTION = "servicekit_traffic"
LIVE, SHADOW = "live", "shadow"
#: The marker column of every dyable table.
TRAFFIC_COLUMN = "traffic"
#: Prefix of every Redis key written for dyed traffic (limiter and cache keys; breaker state
#: is about the dependency, shared by both kinds of traffic).
REDIS_PREFIX = "shadow:"

_WRITE = re.compile(
    r"^\s*(insert|update|delete|replace|merge|upsert|truncate|create|drop|alter)\b", re.I
)


class ShadowWriteError(ServiceError):
    """A dyed request tried to write somewhere that is not a shadow table.

    A 500, not a 503: it is a defect of the service (a write path without a shadow
    mapping), permanent until fixed; a 503 would tell clients and the retry layer to try
    again and would be counted as load shedding. Its transaction is rolled back.
    """

    status, slug, title = 500, "shadow-write-refused", "Dyed write refused"


def redis_key(key: str) -> str:
    """`key` as dyed traffic must store it (prefixed), or unchanged for live traffic."""
    return REDIS_PREFIX + key if context.get(context.SHADOW) else key


class TrafficMarked:
    """Mixin: the `traffic` column, written from the request context on insert and update.

    Declared with a server default of `live`, so rows written outside the kit (SQL by hand)
    count as live and are audited as such.
    """

    traffic: Mapped[str] = mapped_column(
        String(8), default=traffic, onupdate=traffic, server_default=LIVE
    )


@contextmanager
def traffic_scope(shadow: bool) -> Iterator[None]:
    """Run a background pass as one kind of traffic (its sessions and calls follow)."""
    with context.request_scope({context.SHADOW: shadow}):
        yield


async def for_each_traffic(job: Callable[[], Awaitable[T]]) -> dict[str, T]:
    """Run `job` once as live and once as shadow traffic (background jobs): results by kind."""
    results: dict[str, T] = {}
    for kind in (LIVE, SHADOW):
        with traffic_scope(kind == SHADOW):
            results[kind] = await job()
    return results


# --- connections ---------------------------------------------------------------------------


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (None for an in-memory database)."""
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    return None if not path or path == ":memory:" else path


def shadow_sqlite_path(url: str) -> str:
    """Where a SQLite database keeps its shadow tables: `<file>.shadow` beside it."""
    path = sqlite_path(url)
    return ":memory:" if path is None else f"{path}.{SCHEMA}"


def attach_sqlite_shadow(engine: AsyncEngine, url: str) -> None:
    """ATTACH the shadow database as `shadow` on every new SQLite connection."""
    shadow_file = shadow_sqlite_path(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _attach(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (shadow_file,))
        cursor.execute(f"PRAGMA {SCHEMA}.journal_mode=WAL")
        cursor.execute(f"PRAGMA {SCHEMA}.synchronous=NORMAL")
        cursor.close()


def shadow_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` with the shadow translate map (same pool, events and guard)."""
    return engine.execution_options(schema_translate_map=TRANSLATE_MAP, **{TRAFFIC_OPTION: SHADOW})


def guard_dyed_writes(engine: AsyncEngine) -> None:
    """Refuse writes of dyed traffic that would not land in a shadow table (see the module)."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _guard(
        conn: Connection, _cursor: Any, statement: str, _p: Any, ctx: Any, _many: bool
    ) -> None:
        options = conn.get_execution_options()
        dyed = options.get(TRAFFIC_OPTION) == SHADOW
        if not (dyed or context.get(context.SHADOW)):
            return
        compiled = getattr(ctx, "compiled", None)
        dml = getattr(compiled, "statement", None)
        if isinstance(dml, UpdateBase):
            if dyed and _lands_in_shadow(dml, options):
                return
        elif isinstance(dml, ExecutableDDLElement):
            if dyed:
                return  # a migration's shadow pass: DDL constructs follow the translate map
        elif not _WRITE.match(statement):
            return  # a read (or a transaction statement): dyed reads may look anywhere
        raise ShadowWriteError(
            "this write has no shadow table; dyed traffic never writes live data"
        )


def _lands_in_shadow(dml: UpdateBase, options: dict[str, Any]) -> bool:
    translate: dict[str | None, str] = options.get("schema_translate_map") or {}
    table = getattr(dml, "table", None)
    schema = getattr(table, "schema", "?")
    return translate.get(schema, schema) == SCHEMA


# --- the pollution audit, the snapshot and the reset --------------------------------------


@dataclass(frozen=True)
class Finding:
    """One reason the audit fails: the live table and what is wrong with it."""

    table: str
    problem: str


async def dyable_tables(conn: AsyncConnection) -> list[str]:
    """Tables that have a shadow twin (what the migrations built in `shadow`), sorted."""
    if conn.dialect.name == "sqlite":
        rows = await conn.execute(
            text("SELECT name FROM shadow.sqlite_master WHERE type = 'table'")
        )
    else:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": SCHEMA}
        )
    return sorted(name for (name,) in rows if not name.startswith(("alembic_version", "sqlite_")))


def _quoted(conn: AsyncConnection, table: str, schema: str | None = None) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


async def live_checksums(conn: AsyncConnection, tables: list[str] | None = None) -> dict[str, str]:
    """sha256 of every live dyable table's rows (ordered, every column), by table."""
    sums: dict[str, str] = {}
    for table in tables if tables is not None else await dyable_tables(conn):
        result = await conn.execute(text(f"SELECT * FROM {_quoted(conn, table)}"))  # noqa: S608  # nosec B608: identifiers quoted by the dialect
        rows = sorted(repr(tuple(row)) for row in result)
        digest = hashlib.sha256()
        for row in rows:
            digest.update(row.encode())
            digest.update(b"\n")
        sums[table] = digest.hexdigest()
    return sums


async def audit(
    conn: AsyncConnection, snapshot: dict[str, str] | None = None
) -> tuple[list[str], list[Finding]]:
    """(tables checked, findings): dyed rows in live tables, and changes since `snapshot`."""
    tables = await dyable_tables(conn)
    findings: list[Finding] = []
    for table in tables:
        column = _quoted(conn, TRAFFIC_COLUMN)
        count = (
            await conn.execute(
                text(f"SELECT count(*) FROM {_quoted(conn, table)} WHERE {column} <> :live"),  # noqa: S608  # nosec B608: identifiers quoted by the dialect
                {"live": LIVE},
            )
        ).scalar_one()
        if count:
            findings.append(Finding(table, f"{count} row(s) written by dyed traffic"))
    if snapshot is not None:
        now = await live_checksums(conn, [t for t in tables if t in snapshot])
        for table, digest in now.items():
            if digest != snapshot[table]:
                findings.append(Finding(table, "changed since the snapshot"))
    return tables, findings


async def reset(conn: AsyncConnection) -> dict[str, int]:
    """Empty every shadow table; rows deleted by table."""
    tables = await dyable_tables(conn)
    deleted: dict[str, int] = {}
    if conn.dialect.name == "postgresql" and tables:
        for table in tables:
            count = await conn.execute(
                text(f"SELECT count(*) FROM {_quoted(conn, table, SCHEMA)}")  # noqa: S608  # nosec B608: identifiers quoted by the dialect
            )
            deleted[table] = int(count.scalar_one())
        names = ", ".join(_quoted(conn, t, SCHEMA) for t in tables)
        await conn.execute(text(f"TRUNCATE {names} CASCADE"))
        return deleted
    await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # any order, like TRUNCATE ... CASCADE
    for table in tables:
        result = await conn.execute(text(f"DELETE FROM {_quoted(conn, table, SCHEMA)}"))  # noqa: S608  # nosec B608: identifiers quoted by the dialect
        deleted[table] = int(getattr(result, "rowcount", 0) or 0)
    return deleted


@asynccontextmanager
async def admin_connection(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection for the audit and the reset: the shadow side attached, in a transaction."""
    full = async_database_url(url)
    engine = create_async_engine(full)
    if full.startswith("sqlite"):
        attach_sqlite_shadow(engine, full)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()
