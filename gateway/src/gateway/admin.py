"""Operator routes (Bearer `GATEWAY_ADMIN_TOKEN`): runtime fault injection and read-only mode.

`PUT/GET/DELETE /admin/faults/{service}` forward to the service's `/internal/faults` with the
service credential; the body is validated here too, so a bad one never leaves the gateway.
`PUT/GET/DELETE /admin/read-only/{service}` hold a service's data tier in read-only mode,
show it, and release it (the service's `/internal/read-only`, servicekit.admission.switch).
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Request
from servicekit import Faults, NotFoundError, ServiceClient, problem_responses
from servicekit.admission.switch import ReadOnlyPublic
from starlette.responses import Response

from gateway.dependencies import AdminDep
from gateway.exceptions import UnknownFaultTargetError, UnknownReadOnlyTargetError
from gateway.headers import response_headers

#: Services that take faults, and the lifespan state key of their client.
FAULT_TARGETS = ("payment", "inventory")
#: Services with a read-only switch: those with a database.
READ_ONLY_TARGETS = ("order", "inventory", "payment")

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(401, 404, 503),
)

ServiceName = Annotated[str, Path(description="The service to fault: `payment` or `inventory`.")]
DataServiceName = Annotated[
    str, Path(description="A service with a database: `order`, `inventory` or `payment`.")
]


def _client(
    request: Request, service: str, targets: tuple[str, ...], error: type[NotFoundError], what: str
) -> ServiceClient:
    if service not in targets:
        raise error(f"no {what} on {service[:32]!r}; use one of {', '.join(targets)}")
    client: ServiceClient = getattr(request.state, service)
    return client


def _target(request: Request, service: str) -> ServiceClient:
    return _client(request, service, FAULT_TARGETS, UnknownFaultTargetError, "fault injection")


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


def _data_service(request: Request, service: str) -> ServiceClient:
    return _client(
        request, service, READ_ONLY_TARGETS, UnknownReadOnlyTargetError, "read-only switch"
    )


@router.get("/read-only/{service}", response_model=ReadOnlyPublic)
async def read_read_only(request: Request, service: DataServiceName) -> Response:
    """Show whether a service refuses writes now, and whether an operator holds it."""
    return _relay(await _data_service(request, service).request("GET", "/internal/read-only"))


@router.put("/read-only/{service}", response_model=ReadOnlyPublic)
async def hold_read_only(request: Request, service: DataServiceName) -> Response:
    """Hold a service in read-only mode (writes 503) until it is released."""
    return _relay(await _data_service(request, service).request("PUT", "/internal/read-only"))


@router.delete("/read-only/{service}", response_model=ReadOnlyPublic)
async def release_read_only(request: Request, service: DataServiceName) -> Response:
    """Release the hold: the service's own measurements decide again."""
    return _relay(await _data_service(request, service).request("DELETE", "/internal/read-only"))
