"""Use cases of the inventory service: `InventoryService` (no FastAPI here, no SQL).

Each use case runs in a transaction it opens from its `UnitOfWork` (the SQL repository in the
app, a fake in unit tests), with an injected clock, so the rules are tested without a database
and without sleeping. An error raised inside a transaction rolls it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from inventory.exceptions import (
    OutOfStockError,
    ProductNotFoundError,
    ReservationCommittedError,
    ReservationNotFoundError,
    ReservationNotHeldError,
    UnknownSkuError,
)
from inventory.models import Product, Reservation, ReservationStatus
from inventory.schemas import ReservationItemPublic, ReservationPublic

Clock = Callable[[], datetime]
CURRENCY = "USD"
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


class InventoryRepository(Protocol):
    async def list_products(self, after: str | None, limit: int) -> Sequence[Product]: ...
    async def get_product(self, sku: str) -> Product | None: ...
    async def get_prices(self, skus: Iterable[str]) -> dict[str, int]: ...
    async def reserve_stock(self, sku: str, quantity: int) -> bool: ...
    async def settle_stock(self, items: Iterable[tuple[str, int]], *, consume: bool) -> None: ...
    async def claim_order(
        self, reservation_id: str, order_id: str, *, expires_at: datetime, now: datetime
    ) -> bool: ...
    async def add_items(
        self, reservation_id: str, items: Sequence[tuple[str, int, int]]
    ) -> None: ...
    async def get_reservation(self, reservation_id: str) -> Reservation | None: ...
    async def find_by_order(self, order_id: str) -> Reservation | None: ...
    async def transition(
        self, reservation_id: str, to: ReservationStatus, *, now: datetime, live: bool | None = None
    ) -> bool: ...
    async def expired_ids(self, now: datetime, limit: int) -> list[str]: ...


#: Opens a transaction and yields a repository bound to it (committed on clean exit).
UnitOfWork = Callable[[], AbstractAsyncContextManager[InventoryRepository]]


def paginate(rows: Sequence[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Keyset page from `limit + 1` fetched rows: the extra row only says another page exists."""
    page = list(rows[:limit])
    next_cursor = key(page[-1]) if len(rows) > limit and page else None
    return page, next_cursor


def to_public(reservation: Reservation) -> ReservationPublic:
    items = [ReservationItemPublic.model_validate(item) for item in reservation.items]
    return ReservationPublic(
        id=reservation.id,
        order_id=reservation.order_id,
        status=reservation.status,
        items=items,
        currency=CURRENCY,
        total_cents=sum(i.quantity * i.unit_price_cents for i in items),
        expires_at=reservation.expires_at,
        created_at=reservation.created_at,
    )


async def _load(repo: InventoryRepository, reservation_id: str) -> Reservation:
    reservation = await repo.get_reservation(reservation_id)
    if reservation is None:
        raise ReservationNotFoundError(f"no reservation {reservation_id}")
    return reservation


class InventoryService:
    """Products, reservations and their expiry; one instance per app, shared with the sweeper."""

    def __init__(
        self, unit_of_work: UnitOfWork, *, clock: Clock = utc_now, default_ttl_seconds: int = 300
    ) -> None:
        self.unit_of_work = unit_of_work
        self.clock = clock
        self.default_ttl_seconds = default_ttl_seconds

    async def list_products(
        self, *, after: str | None, limit: int
    ) -> tuple[list[Product], str | None]:
        """One keyset page of products ordered by sku, and the cursor of the next page."""
        async with self.unit_of_work() as repo:
            rows = await repo.list_products(after, limit + 1)
        return paginate(rows, limit, key=lambda product: product.sku)

    async def read_product(self, sku: str) -> Product:
        """One product, or ProductNotFoundError."""
        async with self.unit_of_work() as repo:
            product = await repo.get_product(sku)
        if product is None:
            raise ProductNotFoundError(f"no product {sku!r}")
        return product

    async def reserve(
        self, order_id: str, items: Sequence[tuple[str, int]], ttl_seconds: int | None = None
    ) -> tuple[Reservation, bool]:
        """Hold stock for an order: (reservation, created). All items or none."""
        moment = self.clock()
        ttl = ttl_seconds or self.default_ttl_seconds
        reservation_id = str(uuid.uuid4())
        async with self.unit_of_work() as repo:
            # The claim is the transaction's first statement and a write: SQLite then takes its
            # write lock up front (waiting on busy_timeout), never a read lock it must upgrade.
            claimed = await repo.claim_order(
                reservation_id, order_id, now=moment, expires_at=moment + timedelta(seconds=ttl)
            )
            if not claimed:
                existing = await repo.find_by_order(order_id)
                assert existing is not None, "claim refused but no reservation for the order"
                return existing, False
            prices = await repo.get_prices(sku for sku, _ in items)
            unknown = sorted({sku for sku, _ in items} - prices.keys())
            if unknown:
                raise UnknownSkuError(f"unknown sku: {', '.join(unknown)}")
            # Sorted order: two reservations touching the same skus lock them in the same order.
            for sku, quantity in sorted(items):
                if not await repo.reserve_stock(sku, quantity):
                    raise OutOfStockError(
                        f"not enough stock for {sku!r} (wanted {quantity})", extra={"sku": sku}
                    )
            await repo.add_items(
                reservation_id, [(sku, q, prices[sku]) for sku, q in sorted(items)]
            )
            return await _load(repo, reservation_id), True

    async def commit(self, reservation_id: str) -> Reservation:
        """Take held stock for good. Idempotent; expired (swept or not) cannot be committed."""
        async with self.unit_of_work() as repo:
            moved = await _settle(
                repo, reservation_id, ReservationStatus.COMMITTED, now=self.clock(), live=True
            )
            if moved is not None:
                return moved
            reservation = await _load(repo, reservation_id)
        if reservation.status == ReservationStatus.COMMITTED:
            return reservation
        state = "expired" if reservation.status == ReservationStatus.HELD else reservation.status
        raise ReservationNotHeldError(f"reservation {reservation_id} is {state}, not held")

    async def release(self, reservation_id: str) -> Reservation:
        """Give held stock back. Idempotent; a committed reservation cannot be released."""
        async with self.unit_of_work() as repo:
            moved = await _settle(
                repo, reservation_id, ReservationStatus.RELEASED, now=self.clock()
            )
            if moved is not None:
                return moved
            reservation = await _load(repo, reservation_id)
        if reservation.status == ReservationStatus.COMMITTED:
            raise ReservationCommittedError(f"reservation {reservation_id} is committed")
        return reservation

    async def reservations_for(self, order_id: str) -> list[Reservation]:
        """The reservations of one order (at most one today)."""
        async with self.unit_of_work() as repo:
            reservation = await repo.find_by_order(order_id)
        return [] if reservation is None else [reservation]

    async def sweep_expired(self, *, batch: int = 100) -> int:
        """Expire every held reservation past `expires_at`; returns how many were expired.

        One short transaction per reservation, each starting with its guarded UPDATE, so a
        sweep never holds locks long and never races a concurrent commit or release into a
        double apply.
        """
        moment = self.clock()
        expired = 0
        while True:
            async with self.unit_of_work() as repo:
                ids = await repo.expired_ids(moment, batch)
            done = 0
            for reservation_id in ids:
                async with self.unit_of_work() as repo:
                    moved = await _settle(
                        repo, reservation_id, ReservationStatus.EXPIRED, now=moment, live=False
                    )
                done += moved is not None
            expired += done
            # A short batch was the last; a batch that expired nothing means others got there.
            if len(ids) < batch or done == 0:
                return expired


async def _settle(
    repo: InventoryRepository,
    reservation_id: str,
    to: ReservationStatus,
    *,
    now: datetime,
    live: bool | None = None,
) -> Reservation | None:
    """Move a held reservation to `to` and settle its stock: taken for good on commit, given
    back otherwise. None if it was not held, or `live` ruled it out (see `transition`)."""
    if not await repo.transition(reservation_id, to, now=now, live=live):
        return None
    reservation = await _load(repo, reservation_id)
    consume = to == ReservationStatus.COMMITTED
    await repo.settle_stock(((i.sku, i.quantity) for i in reservation.items), consume=consume)
    return reservation
