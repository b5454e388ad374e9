"""Request dependencies: short functions over the lifespan state, exposed as `...Dep` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inventory.service import InventoryService


async def get_inventory_service(request: Request) -> InventoryService:
    service: InventoryService = request.state.service
    return service


InventoryServiceDep = Annotated[InventoryService, Depends(get_inventory_service)]
