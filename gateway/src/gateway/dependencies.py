"""Request dependencies over the lifespan state: the caller's API key and the upstreams."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from servicekit import ServiceClient

from gateway.exceptions import MissingApiKeyError, ShadowTrafficForbiddenError
from gateway.keys import ApiKey, KeyTable

# auto_error=False: our own 401 problem (with WWW-Authenticate) instead of FastAPI's; the
# scheme object also documents the Bearer security scheme in OpenAPI.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The client behind `Authorization: Bearer <key>`; 401 if absent or unknown."""
    keys: KeyTable = request.state.keys
    presented = credentials.credentials.strip() if credentials is not None else ""
    if not presented:
        raise MissingApiKeyError("send your API key as 'Authorization: Bearer <key>'")
    api_key = keys.find(presented)
    if api_key is None:
        raise MissingApiKeyError("unknown API key")
    # Dyed load-test traffic lands in shadow tables downstream; only a loadtest key may ask
    # for that, so anyone else sending the marker is refused rather than silently stripped.
    if "x-shadow-traffic" in request.headers and "loadtest" not in api_key.scopes:
        raise ShadowTrafficForbiddenError("X-Shadow-Traffic is accepted only from loadtest keys")
    return api_key


async def get_inventory(request: Request) -> ServiceClient:
    client: ServiceClient = request.state.inventory
    return client


async def get_order(request: Request) -> ServiceClient:
    client: ServiceClient = request.state.order
    return client


ApiKeyDep = Annotated[ApiKey, Depends(authenticate)]
InventoryDep = Annotated[ServiceClient, Depends(get_inventory)]
OrderDep = Annotated[ServiceClient, Depends(get_order)]
