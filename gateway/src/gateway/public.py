"""Public services without routes of their own: `/api/<name>/...` forwarded to a fixed upstream.

A service generated with `make new-service ... PUBLIC=1` is reachable through the gateway with
no gateway edit. `GATEWAY_PUBLIC_SERVICES` (a comma-separated list; `make up`, compose and
Kubernetes set it from the `public` services of services.toml) names them, and each one's
upstream is `GATEWAY_<NAME>_URL` (set like every downstream URL). For each such service the app
gets, at build time, exactly these routes, each documented in OpenAPI:

    GET, POST                /api/<name>/{collection}            -> <upstream>/{collection}
    GET, PUT, PATCH, DELETE  /api/<name>/{collection}/{item_id}  -> the same path upstream

What keeps it safe:
- the upstream is the configured URL of a configured service, never taken from the request;
  a name nobody configured has no route at all (404);
- path segments are bounded patterns, re-quoted, never `.`/`..`; the upstream's probes,
  metrics, docs and internal APIs (`CLOSED`) are never forwarded to;
- the same API key, access limits (gateway.access), body cap and header allow-lists both ways
  (gateway.headers) as the hand-written routes; query parameters pass as given (the upstream
  validates them like every other input);
- services the gateway fronts with routes of their own (`gateway.config.DEDICATED`:
  gateway.routes serves inventory and order, the admin API reaches payment) are never served
  here, even when listed, so none of their internal endpoints becomes public.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Path, Request
from servicekit import NotFoundError, ServiceClient, problem_responses
from starlette.responses import Response

from gateway.dependencies import ApiKeyDep
from gateway.headers import request_headers, response_headers

#: Upstream paths never reachable from outside (the kit's probes, metrics, docs, internal APIs).
CLOSED = frozenset({"healthz", "readyz", "metrics", "internal", "admin", "docs", "redoc"})
COLLECTION_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
#: A JSON object body, checked by the upstream (the gateway relays it within the body cap).
BODY = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}


async def _forward(request: Request, name: str, segments: tuple[str, ...]) -> Response:
    if any(segment in CLOSED for segment in segments[:1]):
        # The same answer as a path without a route: nothing tells what lies behind it.
        return NotFoundError("no route for this path").to_response()
    path = "".join("/" + quote(segment, safe="") for segment in segments)
    client: ServiceClient = request.state.public[name]
    # Read after authentication; the body cap (413) applies while reading.
    body = await request.body() if request.method in ("POST", "PUT", "PATCH") else None
    upstream = await client.request(
        request.method,
        path,
        content=body,
        params=httpx.QueryParams(request.url.query),
        headers=request_headers(request.headers.items()),
    )
    # Status and body unchanged; only allow-listed headers come back.
    return Response(
        content=upstream.content,
        status_code=upstream.status_code,
        headers=response_headers(upstream.headers.multi_items()),
    )


def _collection_endpoint(name: str) -> Callable[..., Awaitable[Response]]:
    async def forward_collection(
        request: Request,
        api_key: ApiKeyDep,
        collection: Annotated[str, Path(pattern=COLLECTION_PATTERN)],
    ) -> Response:
        return await _forward(request, name, (collection,))

    return forward_collection


def _item_endpoint(name: str) -> Callable[..., Awaitable[Response]]:
    async def forward_item(
        request: Request,
        api_key: ApiKeyDep,
        collection: Annotated[str, Path(pattern=COLLECTION_PATTERN)],
        item_id: Annotated[str, Path(pattern=ITEM_ID_PATTERN)],
    ) -> Response:
        return await _forward(request, name, (collection, item_id))

    return forward_item


def public_router(upstreams: Mapping[str, str]) -> APIRouter:
    """The routes of every generic public service (none when `upstreams` is empty)."""
    router = APIRouter(prefix="/api", responses=problem_responses(401, 403, 404, 413, 422, 503))
    for name in sorted(upstreams):
        shapes = (
            ("/{collection}", ("GET", "POST"), _collection_endpoint(name), "collection"),
            (
                "/{collection}/{item_id}",
                ("GET", "PUT", "PATCH", "DELETE"),
                _item_endpoint(name),
                "item",
            ),
        )
        for suffix, methods, endpoint, shape in shapes:
            for method in methods:
                router.add_api_route(
                    f"/{name}{suffix}",
                    endpoint,
                    methods=[method],
                    operation_id=f"{method.lower()}_{name}_{shape}",
                    summary=f"{method} one {shape} of the {name} service (forwarded)",
                    tags=[name],
                    openapi_extra=BODY if method in ("POST", "PUT", "PATCH") else None,
                )
    return router
