"""Domain errors of the inventory service (rendered as problem+json by servicekit)."""

from __future__ import annotations

from servicekit import ConflictError, NotFoundError, UnprocessableError


class ProductNotFoundError(NotFoundError):
    slug = "product-not-found"
    title = "Product not found"


class ReservationNotFoundError(NotFoundError):
    slug = "reservation-not-found"
    title = "Reservation not found"


class UnknownSkuError(UnprocessableError):
    slug = "unknown-sku"
    title = "Unknown SKU"


class OutOfStockError(ConflictError):
    slug = "out-of-stock"
    title = "Out of stock"


class ReservationNotHeldError(ConflictError):
    slug = "reservation-not-held"
    title = "Reservation not held"


class ReservationCommittedError(ConflictError):
    slug = "reservation-committed"
    title = "Reservation already committed"
