"""A throwaway manifest: services.toml plus one extra service, `ledger`, with a real package.

`ledger` is a minimal servicekit app written to a temp directory (put it on the import path to
build or run it). The order service is made to call it, so the manifest's derived facts move
too: ledger starts before order, and order gets `ORDER_LEDGER_URL`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from infra.manifest import DEFAULT_PATH, load

NAME = "ledger"
#: After the highest port of services.toml, so a service added by `make new-service` stays clear.
PORT = max(service.port for service in load(DEFAULT_PATH)) + 1
PREFIX = "LEDGER"

ENTRY = f"""
[[service]]
name = "{NAME}"
package = "services/{NAME}"
module = "{NAME}"
port = {PORT}
prefix = "{PREFIX}"
database = false
downstreams = []
public = false
"""

CONFIG = f'''
"""Settings of the throwaway ledger service (env prefix `{PREFIX}_`)."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict
from servicekit import ServiceSettings


class LedgerSettings(ServiceSettings):
    service_name: ClassVar[str] = "{NAME}"
    model_config = SettingsConfigDict(env_prefix="{PREFIX}_", env_file=".env", extra="ignore")
'''

MAIN = '''
"""The throwaway ledger app: one documented route behind the service credential."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from servicekit import create_service_app

from ledger.config import LedgerSettings

router = APIRouter()


@router.get("/entries")
async def list_entries() -> dict[str, list[str]]:
    """List the ledger's entries."""
    return {"items": []}


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"settings": settings}

    return create_service_app(settings, title="ledger", lifespan=lifespan, routers=[router])
'''


def write(root: Path) -> tuple[Path, Path]:
    """(the manifest, the directory to import `ledger` from), both under `root`."""
    manifest = DEFAULT_PATH.read_text(encoding="utf-8") + ENTRY
    # order calls the ledger: its start order and downstream URLs must follow.
    manifest = manifest.replace(
        'downstreams = ["inventory", "payment"]',
        f'downstreams = ["inventory", "{NAME}", "payment"]',
    )
    assert f'"{NAME}", "payment"' in manifest, "services.toml changed: update extra_service.py"
    path = root / "services.toml"
    path.write_text(manifest, encoding="utf-8")
    package = root / "src" / NAME
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text(textwrap.dedent(CONFIG).lstrip())
    (package / "main.py").write_text(textwrap.dedent(MAIN).lstrip())
    return path, root / "src"
