"""Domain errors of the payment service (rendered as problem+json by servicekit)."""

from __future__ import annotations

from servicekit import (
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    UnprocessableError,
)


class ChargeNotFoundError(NotFoundError):
    slug = "charge-not-found"
    title = "Charge not found"


class IdempotencyKeyReusedError(UnprocessableError):
    slug = "idempotency-key-reused"
    title = "Idempotency key reused with a different body"


class PaymentDeclinedError(PaymentRequiredError):
    slug = "payment-declined"
    title = "Payment declined"


class NotRefundableError(ConflictError):
    slug = "not-refundable"
    title = "Charge not refundable"
