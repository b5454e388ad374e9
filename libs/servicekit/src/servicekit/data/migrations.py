"""Alembic, driven from code: each service keeps its migrations in `<package>/migrations`.

`upgrade(url, "order")` applies a service's migrations; each service has its own version
table, so several services may share one database. The env.py of a service is two lines:
`from servicekit.data.migrations import run_env; run_env(Base.metadata, "order")`.

Every upgrade runs the same scripts twice: first on the shadow side (servicekit.data.shadow),
then on the live one. The shadow side is reached by *where the connection points*, not by
rewriting names: on PostgreSQL a connection whose `search_path` is the `shadow` schema, on
SQLite the shadow file (`<db>.shadow`) opened as the main database. So every statement of a
script lands there unchanged, `op.execute("...")` and `ALTER TABLE` included (Alembic's ALTER
constructs ignore SQLAlchemy's `schema_translate_map`, which is why that is used only at run
time), and the shadow side keeps its own version table: a new migration reaches both sides
with nothing to add, and a shadow side created later catches up from the first revision.
Shadow goes first: a script that fails there stops before it touches live data.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from servicekit.data import shadow
from servicekit.data.database import ensure_sqlite_directory
from servicekit.settings import async_database_url


def _config(database_url: str, package: str, side: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["version_table"] = f"alembic_version_{package}"
    config.attributes["side"] = side
    return config


def upgrade(database_url: str, package: str, revision: str = "head") -> None:
    """Apply `package`'s migrations to `database_url`: its shadow side, then its live side.

    Blocking: from async code call it through `asyncio.to_thread`.
    """
    url = async_database_url(database_url)
    if url.startswith("sqlite"):
        ensure_sqlite_directory(url)
        shadow_url = url.split(":///", 1)[0] + ":///" + shadow.shadow_sqlite_path(url)
        command.upgrade(_config(shadow_url, package, shadow.LIVE), revision)
    else:
        command.upgrade(_config(url, package, shadow.SHADOW), revision)
    command.upgrade(_config(url, package, shadow.LIVE), revision)


def _run(connection: Connection, metadata: MetaData, version_table: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str, metadata: MetaData, version_table: str, side: str) -> None:
    connect_args: dict[str, Any] = {}
    if side == shadow.SHADOW:
        # PostgreSQL: every unqualified name of the scripts resolves in the shadow schema.
        connect_args["server_settings"] = {"search_path": shadow.SCHEMA}
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {shadow.SCHEMA}")
        finally:
            await engine.dispose()
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run, metadata, version_table)
            await connection.commit()
    finally:
        await engine.dispose()


def run_env(metadata: MetaData, package: str) -> None:
    """The body of a service's `migrations/env.py`."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    version_table: Any = config.attributes.get("version_table", f"alembic_version_{package}")
    side: Any = config.attributes.get("side", shadow.LIVE)
    asyncio.run(_run_async(url, metadata, version_table, side))


def main(argv: list[str] | None = None) -> None:
    """`python -m servicekit.data.migrations <package> <database-url>`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m servicekit.data.migrations <package> <database-url>")
    upgrade(args[1], args[0])


if __name__ == "__main__":
    main()
