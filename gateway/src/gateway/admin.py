"""Operator routes (Bearer `GATEWAY_ADMIN_TOKEN`): runtime fault injection on the services.

`PUT/GET/DELETE /admin/faults/{service}` forward to the service's `/internal/faults` with the
service credential; the body is validated here too, so a bad one never leaves the gateway.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Request
from servicekit import Faults, ServiceClient, problem_responses
from starlette.responses import Response

from gateway.dependencies import AdminDep
from gateway.exceptions import UnknownFaultTargetError
from gateway.headers import response_headers

#: Services that take faults, and the lifespan state key of their client.
FAULT_TARGETS = ("payment", "inventory")

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(401, 404, 503),
)

ServiceName = Annotated[str, Path(description="The service to fault: `payment` or `inventory`.")]


def _target(request: Request, service: str) -> ServiceClient:
    if service not in FAULT_TARGETS:
        raise UnknownFaultTargetError(
            f"no fault injection for {service[:32]!r}; use one of {', '.join(FAULT_TARGETS)}"
        )
    client: ServiceClient = getattr(request.state, service)
    return client


def _relay(upstream: httpx.Response) -> Response:
    return Response(
        content=upstream.content,
        status_code=upstream.status_code,
        headers=response_headers(upstream.headers.multi_items()),
    )


@router.get("/faults/{service}", response_model=Faults)
async def read_faults(request: Request, service: ServiceName) -> Response:
    """Show the faults a service applies now."""
    return _relay(await _target(request, service).request("GET", "/internal/faults"))


@router.put("/faults/{service}", response_model=Faults, responses=problem_responses(422))
async def replace_faults(request: Request, service: ServiceName, body: Faults) -> Response:
    """Set a service's faults: error rate (0..1), added latency (ms), hang."""
    target = _target(request, service)
    return _relay(await target.request("PUT", "/internal/faults", json=body.model_dump()))


@router.delete("/faults/{service}", response_model=Faults)
async def clear_faults(request: Request, service: ServiceName) -> Response:
    """Clear a service's faults."""
    return _relay(await _target(request, service).request("DELETE", "/internal/faults"))
