"""Gateway errors, rendered as problem+json by servicekit."""

from __future__ import annotations

from servicekit import ForbiddenError, UnauthorizedError


class MissingApiKeyError(UnauthorizedError):
    slug = "api-key-required"
    title = "API key required"

    def __init__(self, detail: str) -> None:
        # RFC 6750: a 401 names the scheme the client should use.
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class ShadowTrafficForbiddenError(ForbiddenError):
    slug = "shadow-traffic-forbidden"
    title = "Shadow traffic not allowed"
