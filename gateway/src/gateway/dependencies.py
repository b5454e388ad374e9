"""Request dependencies over the lifespan state: the caller's API key and the upstreams."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from servicekit import ServiceClient, context, contract, token_matches

from gateway.config import GatewaySettings
from gateway.exceptions import AdminTokenRequiredError, MissingApiKeyError
from gateway.keys import ApiKey

# auto_error=False: our own 401 problem (with WWW-Authenticate) instead of FastAPI's; the
# scheme object also documents the Bearer security scheme in OpenAPI.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="Authorization: Bearer <GATEWAY_ADMIN_TOKEN> (operators; API keys are refused)",
)


async def authenticate(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The client behind `Authorization: Bearer <key>`; 401 if absent or unknown.

    The key was looked up once, at the edge (`gateway.keys.ApiKeyTrust`), which also refused
    the dye from keys without the `loadtest` scope; this reads what it found.
    """
    caller = context.get(contract.CALLER, contract.ANONYMOUS)
    if isinstance(caller.identity, ApiKey):
        return caller.identity
    if credentials is None or not credentials.credentials.strip():
        raise MissingApiKeyError("send your API key as 'Authorization: Bearer <key>'")
    raise MissingApiKeyError("unknown API key")


async def authenticate_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    """Let only the bearer of `GATEWAY_ADMIN_TOKEN` through (compared in constant time)."""
    settings: GatewaySettings = request.state.settings
    presented = credentials.credentials.strip() if credentials is not None else ""
    if not token_matches(presented, [settings.admin_token.get_secret_value()]):
        raise AdminTokenRequiredError("send the admin token as 'Authorization: Bearer <token>'")


async def get_inventory(request: Request) -> ServiceClient:
    client: ServiceClient = request.state.inventory
    return client


async def get_order(request: Request) -> ServiceClient:
    client: ServiceClient = request.state.order
    return client


ApiKeyDep = Annotated[ApiKey, Depends(authenticate)]
InventoryDep = Annotated[ServiceClient, Depends(get_inventory)]
OrderDep = Annotated[ServiceClient, Depends(get_order)]
AdminDep = Depends(authenticate_admin)
