"""Expiry rules and the sweeper, on a fake repository and a fake clock (no sleeping)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from inventory.exceptions import ReservationNotHeldError
from inventory.models import Reservation
from inventory.service import InventoryService


async def hold(
    service: InventoryService, sku: str = "tea", quantity: int = 2, ttl: int = 60
) -> Reservation:
    reservation, created = await service.reserve(str(uuid.uuid4()), [(sku, quantity)], ttl)
    assert created
    return reservation


async def test_sweep_leaves_reservation_before_its_expiry(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    reservation = await hold(service, ttl=60)
    clock.advance(59)

    assert await service.sweep_expired() == 0
    assert reservation.status == "held"
    assert repo.products["tea"].reserved == 2


async def test_sweep_expires_reservation_at_its_expiry_and_frees_stock(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    reservation = await hold(service, ttl=60)
    clock.advance(60)

    assert await service.sweep_expired() == 1
    assert reservation.status == "expired"
    assert repo.products["tea"].reserved == 0
    assert repo.products["tea"].stock == 10


async def test_sweep_is_idempotent(repo: Any, clock: Any, service: InventoryService) -> None:
    repo.add_product("tea", stock=10)
    await hold(service, ttl=1)
    clock.advance(5)

    assert await service.sweep_expired() == 1
    assert await service.sweep_expired() == 0
    assert repo.products["tea"].reserved == 0


async def test_sweep_ignores_committed_and_released_reservations(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    committed = await hold(service, quantity=3)
    released = await hold(service, quantity=4)
    await service.commit(committed.id)
    await service.release(released.id)
    clock.advance(3600)

    assert await service.sweep_expired() == 0
    assert (committed.status, released.status) == ("committed", "released")
    assert (repo.products["tea"].stock, repo.products["tea"].reserved) == (7, 0)


async def test_sweep_works_through_more_than_one_batch(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=100)
    for _ in range(5):
        await hold(service, quantity=1, ttl=10)
    clock.advance(11)

    assert await service.sweep_expired(batch=2) == 5
    assert repo.products["tea"].reserved == 0


async def test_sweep_uses_one_transaction_per_reservation(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=100)
    for _ in range(3):
        await hold(service, quantity=1, ttl=10)
    clock.advance(11)

    before = repo.transactions
    await service.sweep_expired(batch=10)
    assert repo.transactions - before == 1 + 3  # one scan, then one short transaction each


async def test_commit_refuses_expired_reservation_not_yet_swept(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    reservation = await hold(service, ttl=30)
    clock.advance(30)

    with pytest.raises(ReservationNotHeldError, match="expired"):
        await service.commit(reservation.id)
    assert repo.products["tea"].stock == 10


async def test_release_of_expired_reservation_answers_it_as_is(
    repo: Any, clock: Any, service: InventoryService
) -> None:
    repo.add_product("tea", stock=10)
    reservation = await hold(service, ttl=30)
    clock.advance(31)
    await service.sweep_expired()

    released = await service.release(reservation.id)
    assert released.status == "expired"
    assert repo.products["tea"].reserved == 0
