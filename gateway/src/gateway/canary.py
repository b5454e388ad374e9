"""Operator routes (Bearer `GATEWAY_ADMIN_TOKEN`): the canary route of an upstream service.

`GET/PUT/DELETE /admin/canary/{service}` read, set and remove the share of a service's calls
that go to its canary. The route is written to the routing store every process of the stack
watches (servicekit.downstream.routing), so it reaches every caller of the service, the
gateway and order alike, within about a second; the gateway follows it at once. The upstream
must be a loopback address with a port or an allow-listed host (`GATEWAY_ROUTING_ALLOWED_HOSTS`):
the gateway never routes to an address it has not been told to trust.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from servicekit import Route, RouteError, RoutingTable, UnavailableError, problem_responses
from servicekit.downstream.routing import check_upstream

from gateway.config import GatewaySettings
from gateway.dependencies import AdminDep
from gateway.exceptions import InvalidRouteError, UnknownCanaryTargetError
from gateway.schemas import CanaryRoutePublic, CanaryRouteUpdate

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(401, 422, 503),
)

ServiceName = Annotated[
    str, Path(max_length=64, description="An upstream of the gateway: `order`, `payment`, ...")
]


def _stable(request: Request, service: str) -> str:
    upstreams: dict[str, str] = request.state.upstreams
    if service not in upstreams:
        raise UnknownCanaryTargetError(
            f"no upstream {service[:32]!r}; use one of {', '.join(sorted(upstreams))}"
        )
    return upstreams[service]


def _public(service: str, stable: str, route: Route | None) -> CanaryRoutePublic:
    return CanaryRoutePublic(
        service=service,
        stable=stable,
        upstream=route.upstream if route else None,
        weight=route.weight if route else 0.0,
        version=route.version if route else None,
        step=route.step if route else None,
    )


async def _update(routing: RoutingTable, service: str, route: Route | None) -> None:
    try:
        await routing.update(service, route)
    except OSError as exc:
        raise UnavailableError(f"the routing store refused the change: {exc}") from exc


@router.get("/canary/{service}", response_model=CanaryRoutePublic)
async def read_canary(request: Request, service: ServiceName) -> CanaryRoutePublic:
    """Show a service's canary route and the step its rollout is at."""
    stable = _stable(request, service)
    routing: RoutingTable = request.state.routing
    await routing.refresh()
    return _public(service, stable, routing.routes.get(service))


@router.put("/canary/{service}", response_model=CanaryRoutePublic)
async def replace_canary(
    request: Request, service: ServiceName, body: CanaryRouteUpdate
) -> CanaryRoutePublic:
    """Send `weight` percent of a service's calls, from every caller, to `upstream`."""
    stable = _stable(request, service)
    settings: GatewaySettings = request.state.settings
    try:
        upstream = check_upstream(body.upstream, settings.routing_allowed_hosts)
    except RouteError as exc:
        raise InvalidRouteError(str(exc)) from None
    if upstream == stable:
        raise InvalidRouteError("the canary upstream is the stable one")
    route = Route(upstream, body.weight, body.version, body.step)
    await _update(request.state.routing, service, route)
    return _public(service, stable, route)


@router.delete("/canary/{service}", response_model=CanaryRoutePublic)
async def delete_canary(request: Request, service: ServiceName) -> CanaryRoutePublic:
    """Remove a service's canary route: every call goes to stable."""
    stable = _stable(request, service)
    await _update(request.state.routing, service, None)
    return _public(service, stable, None)
