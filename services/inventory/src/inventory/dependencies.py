"""Request dependencies: short functions over the lifespan state, exposed as `...Dep` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from servicekit import SessionDep

from inventory.config import InventorySettings
from inventory.repository import SqlInventoryRepository
from inventory.service import Clock


async def get_repository(session: SessionDep) -> SqlInventoryRepository:
    return SqlInventoryRepository(session)


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.state.clock
    return clock


async def get_settings(request: Request) -> InventorySettings:
    settings: InventorySettings = request.state.settings
    return settings


RepositoryDep = Annotated[SqlInventoryRepository, Depends(get_repository)]
ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[InventorySettings, Depends(get_settings)]
