"""HTTP routes of the internal inventory API (HTTP only: the rules live in service.py)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response, status
from servicekit import inject_faults, problem_responses
from servicekit.contract import SKU_PATTERN

from inventory.dependencies import InventoryServiceDep
from inventory.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    ProductPage,
    ProductPublic,
    ReservationCreate,
    ReservationList,
    ReservationPublic,
)
from inventory.service import to_public

# Injected faults (servicekit.faults) apply to every product and reservation route.
router = APIRouter(dependencies=[Depends(inject_faults)])
#: Product reads answer every caller alike, so they may come from the read cache
#: (`create_service_app(cached_reads=...)`): `available` is then up to INVENTORY_CACHE_TTL_SECONDS
#: old, or older with `X-Degraded: cache` under pressure. Reservations re-check stock in SQL.
PRODUCT_READS = ("/products",)

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64)]
ReservationId = Annotated[UUID, Path(description="Reservation id (UUID)")]


@router.get("/products", response_model=ProductPage)
async def list_products(
    service: InventoryServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(pattern=SKU_PATTERN, max_length=64)] = None,
) -> ProductPage:
    """List products ordered by sku, one keyset page at a time."""
    page, next_cursor = await service.list_products(after=cursor, limit=limit)
    return ProductPage(
        items=[ProductPublic.model_validate(p) for p in page], next_cursor=next_cursor
    )


@router.get("/products/{sku}", response_model=ProductPublic, responses=problem_responses(404))
async def read_product(sku: SkuPath, service: InventoryServiceDep) -> ProductPublic:
    """Read one product with its available stock."""
    return ProductPublic.model_validate(await service.read_product(sku))


@router.post(
    "/reservations",
    response_model=ReservationPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ReservationPublic}, **problem_responses(409, 422)},
)
async def create_reservation(
    body: ReservationCreate, response: Response, service: InventoryServiceDep
) -> ReservationPublic:
    """Hold stock for an order (all items or none); idempotent by order_id."""
    reservation, created = await service.reserve(
        str(body.order_id), [(item.sku, item.quantity) for item in body.items], body.ttl_seconds
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return to_public(reservation)


@router.post(
    "/reservations/{reservation_id}/commit",
    response_model=ReservationPublic,
    responses=problem_responses(404, 409),
)
async def commit_reservation(
    reservation_id: ReservationId, service: InventoryServiceDep
) -> ReservationPublic:
    """Turn held stock into a sale (idempotent)."""
    return to_public(await service.commit(str(reservation_id)))


@router.post(
    "/reservations/{reservation_id}/release",
    response_model=ReservationPublic,
    responses=problem_responses(404, 409),
)
async def release_reservation(
    reservation_id: ReservationId, service: InventoryServiceDep
) -> ReservationPublic:
    """Give held stock back (idempotent)."""
    return to_public(await service.release(str(reservation_id)))


@router.get("/reservations", response_model=ReservationList)
async def list_reservations(
    order_id: Annotated[UUID, Query()], service: InventoryServiceDep
) -> ReservationList:
    """Reservations of one order (at most one today; a list leaves room for more)."""
    reservations = await service.reservations_for(str(order_id))
    return ReservationList(items=[to_public(r) for r in reservations])
