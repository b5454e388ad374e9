"""`Idempotency-Key`: one dependency checks it, with one error and one status (400), everywhere.

A route that needs the key takes `IdempotencyKeyDep` and documents the header with
`idempotency_key_header(description)`. The header is read here rather than by FastAPI's
`Header()`, whose missing-header answer would be a 422: the contract says 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from servicekit import contract
from servicekit.edge.openapi import required_header
from servicekit.errors import BadRequestError

_KEY = contract.IDEMPOTENCY_KEY


class MissingIdempotencyKeyError(BadRequestError):
    slug, title = "missing-idempotency-key", "Idempotency-Key header required"


class InvalidIdempotencyKeyError(BadRequestError):
    slug, title = "invalid-idempotency-key", "Invalid Idempotency-Key"


async def idempotency_key(request: Request) -> str:
    """The request's `Idempotency-Key`; 400 when it is missing or malformed."""
    raw = request.headers.get(_KEY.header)
    if raw is None:
        raise MissingIdempotencyKeyError(f"the {_KEY.name} header is required")
    key = _KEY.parse(raw)
    if key is None:
        raise InvalidIdempotencyKeyError(
            f"{_KEY.name} must be 1..{contract.IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII "
            "characters"
        )
    return key


def idempotency_key_header(description: str) -> dict[str, Any]:
    """`openapi_extra` documenting the required `Idempotency-Key` header of a route."""
    return required_header(
        _KEY.name,
        pattern=contract.IDEMPOTENCY_KEY_PATTERN,
        max_length=contract.IDEMPOTENCY_KEY_MAX_LENGTH,
        description=description,
    )


IdempotencyKeyDep = Annotated[str, Depends(idempotency_key)]
