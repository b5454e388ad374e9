"""The operator's read-only switch: hold a service's data tier in read-only mode, or release it.

    PUT    /internal/read-only   held on: writes answer 503 whatever the database does
    GET    /internal/read-only   {"read_only": ..., "forced": ...}
    DELETE /internal/read-only   released: the measurements decide again (admission.readonly)

Mounted by `create_service_app` on every internal service whose read-only guard is on; behind
the service credential like every internal route. The gateway exposes it to operators as
`/admin/read-only/{service}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from servicekit.admission.readonly import ReadOnlyGuard
from servicekit.errors import problem_responses


class ReadOnlyPublic(BaseModel):
    """A service's read-only mode now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read_only: bool = Field(description="Writes are refused now (measured or held on).")
    forced: bool = Field(description="Held on by an operator.")


read_only_router = APIRouter(
    prefix="/internal/read-only", tags=["read-only"], responses=problem_responses(401)
)


def _state(request: Request) -> ReadOnlyPublic:
    guard: ReadOnlyGuard = request.app.state.read_only
    return ReadOnlyPublic(read_only=guard.read_only, forced=guard.forced)


@read_only_router.get("", response_model=ReadOnlyPublic)
async def read_read_only(request: Request) -> ReadOnlyPublic:
    """Show whether writes are refused, and whether an operator holds it."""
    return _state(request)


@read_only_router.put("", response_model=ReadOnlyPublic)
async def hold_read_only(request: Request) -> ReadOnlyPublic:
    """Hold read-only mode on until it is released."""
    request.app.state.read_only.force(True)
    return _state(request)


@read_only_router.delete("", response_model=ReadOnlyPublic)
async def release_read_only(request: Request) -> ReadOnlyPublic:
    """Release the hold: the pool wait and statement latency decide again."""
    request.app.state.read_only.force(False)
    return _state(request)
