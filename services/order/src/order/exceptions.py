"""Errors of the order service, mapped to problem+json by servicekit::

(a missing or malformed Idempotency-Key is the kit's 400, servicekit.edge.idempotency)

UnauthorizedError
└── MissingCustomerError         401 missing-customer
PaymentRequiredError
└── PaymentDeclinedError         402 payment-declined
NotFoundError
└── OrderNotFoundError           404 order-not-found
ConflictError
├── OutOfStockError              409 out-of-stock
└── RequestInFlightError         409 request-in-flight (Retry-After)
UnprocessableError
├── IdempotencyKeyReusedError    422 idempotency-key-reused
├── UnknownSkuError              422 unknown-sku
└── AmountOutOfRangeError        422 amount-out-of-range
UnavailableError
└── CheckoutUnavailableError     503 checkout-unavailable (Retry-After)
"""

from __future__ import annotations

from servicekit import (
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    UnauthorizedError,
    UnavailableError,
    UnprocessableError,
)


class MissingCustomerError(UnauthorizedError):
    slug, title = "missing-customer", "Customer unknown"


class PaymentDeclinedError(PaymentRequiredError):
    slug, title = "payment-declined", "Payment declined"


class OrderNotFoundError(NotFoundError):
    slug, title = "order-not-found", "Order not found"


class OutOfStockError(ConflictError):
    slug, title = "out-of-stock", "Out of stock"


class RequestInFlightError(ConflictError):
    slug, title, retry_after = "request-in-flight", "Request in flight", 1


class IdempotencyKeyReusedError(UnprocessableError):
    slug, title = "idempotency-key-reused", "Idempotency key reused"


class UnknownSkuError(UnprocessableError):
    slug, title = "unknown-sku", "Unknown sku"


class AmountOutOfRangeError(UnprocessableError):
    slug, title = "amount-out-of-range", "Amount out of range"


class CheckoutUnavailableError(UnavailableError):
    slug, title = "checkout-unavailable", "Checkout unavailable"
