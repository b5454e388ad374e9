"""Gateway errors, rendered as problem+json by servicekit."""

from __future__ import annotations

from servicekit import (
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
    UnprocessableError,
)


class MissingApiKeyError(UnauthorizedError):
    slug = "api-key-required"
    title = "API key required"

    def __init__(self, detail: str) -> None:
        # RFC 6750: a 401 names the scheme the client should use.
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class ClientRateLimitedError(TooManyRequestsError):
    slug = "client-rate-limited"
    title = "Client rate limit exceeded"


class CheckoutRateLimitedError(TooManyRequestsError):
    slug = "checkout-rate-limited"
    title = "Checkout rate limit exceeded"


class GatewayOverloadedError(UnavailableError):
    slug = "gateway-rate-limited"
    title = "Gateway at its rate limit"


class AdminTokenRequiredError(UnauthorizedError):
    slug = "admin-token-required"
    title = "Admin token required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="admin"'})


class UnknownFaultTargetError(NotFoundError):
    slug = "unknown-fault-target"
    title = "No fault injection for this service"


class UnknownReadOnlyTargetError(NotFoundError):
    slug = "unknown-read-only-target"
    title = "No read-only switch on this service"


class UnknownCanaryTargetError(UnprocessableError):
    slug = "unknown-canary-target"
    title = "No such upstream to route"


class InvalidRouteError(UnprocessableError):
    slug = "invalid-route"
    title = "Invalid canary route"
