"""Reservation use cases on a fake repository: idempotency and status rules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from inventory.exceptions import (
    OutOfStockError,
    ReservationCommittedError,
    ReservationNotFoundError,
    UnknownSkuError,
)
from inventory.service import InventoryService, to_public


async def test_reserve_returns_existing_reservation_for_same_order(
    repo: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10, price_cents=250)
    order = str(uuid.uuid4())
    first, created = await service.reserve(order, [("tea", 2)], 60)
    again, created_again = await service.reserve(order, [("tea", 5)], 60)

    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert repo.products["tea"].reserved == 2


async def test_reserve_prices_items_and_totals(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10, price_cents=250)
    repo.add_product("mug", stock=10, price_cents=1800)
    reservation, _ = await service.reserve(str(uuid.uuid4()), [("tea", 2), ("mug", 1)], 60)
    public = to_public(reservation)

    assert public.total_cents == 2 * 250 + 1800
    assert [i.sku for i in public.items] == ["mug", "tea"]
    assert public.created_at == clock()
    assert (public.expires_at - public.created_at).total_seconds() == 60


async def test_reserve_names_unknown_skus(repo: Any, service: InventoryService) -> None:
    repo.add_product("tea", stock=10)
    with pytest.raises(UnknownSkuError, match="ghost"):
        await service.reserve(str(uuid.uuid4()), [("tea", 1), ("ghost", 1)], 60)


async def test_reserve_refuses_more_than_available(repo: Any, service: InventoryService) -> None:
    repo.add_product("tea", stock=3)
    with pytest.raises(OutOfStockError):
        await service.reserve(str(uuid.uuid4()), [("tea", 4)], 60)


async def test_commit_is_idempotent_and_consumes_stock_once(
    repo: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    reservation, _ = await service.reserve(str(uuid.uuid4()), [("tea", 4)], 60)
    await service.commit(reservation.id)
    await service.commit(reservation.id)

    assert (repo.products["tea"].stock, repo.products["tea"].reserved) == (6, 0)


async def test_release_of_committed_reservation_is_refused(
    repo: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    reservation, _ = await service.reserve(str(uuid.uuid4()), [("tea", 4)], 60)
    await service.commit(reservation.id)

    with pytest.raises(ReservationCommittedError):
        await service.release(reservation.id)


async def test_commit_of_unknown_reservation_is_not_found(service: InventoryService) -> None:
    with pytest.raises(ReservationNotFoundError):
        await service.commit(str(uuid.uuid4()))
