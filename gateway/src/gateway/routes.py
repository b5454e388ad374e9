"""Public routes: each one forwards to a fixed, configured upstream (never a request-given host)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Path, Query, Request
from servicekit import IdempotencyKeyDep, idempotency_key_header, problem_responses
from servicekit.contract import ID_PATTERN, SKU_PATTERN
from starlette.responses import Response

from gateway.dependencies import ApiKeyDep, InventoryDep, OrderDep
from gateway.headers import request_headers, response_headers
from gateway.schemas import ORDER_CREATE_SCHEMA, OrderPublic, ProductPage, ProductPublic

router = APIRouter(prefix="/api", responses=problem_responses(401, 403, 503))
#: Stateful testing (and clients) follow a created order to its read.
READ_ORDER_LINK = {"operationId": "read_order", "parameters": {"order_id": "$response.body#/id"}}


def _relay(upstream: httpx.Response) -> Response:
    # Status and body unchanged; only allow-listed headers come back.
    return Response(
        content=upstream.content,
        status_code=upstream.status_code,
        headers=response_headers(upstream.headers.multi_items()),
    )


def _upstream_headers(request: Request) -> dict[str, str]:
    # The customer travels from the request context, set at the edge from the API key.
    return request_headers(request.headers.items())


@router.get("/products", response_model=ProductPage, responses=problem_responses(422))
async def list_products(
    request: Request,
    api_key: ApiKeyDep,
    inventory: InventoryDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=SKU_PATTERN)] = None,
) -> Response:
    """List products ordered by SKU, one page at a time."""
    params = {"limit": str(limit)} | ({"cursor": cursor} if cursor is not None else {})
    upstream = await inventory.request(
        "GET", "/products", params=params, headers=_upstream_headers(request)
    )
    return _relay(upstream)


@router.get("/products/{sku}", response_model=ProductPublic, responses=problem_responses(404, 422))
async def read_product(
    request: Request,
    api_key: ApiKeyDep,
    inventory: InventoryDep,
    sku: Annotated[str, Path(pattern=SKU_PATTERN)],
) -> Response:
    """Read one product by SKU."""
    upstream = await inventory.request(
        "GET", f"/products/{quote(sku, safe='')}", headers=_upstream_headers(request)
    )
    return _relay(upstream)


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderPublic,
    responses={
        **problem_responses(400, 402, 404, 409, 413, 422),
        201: {"links": {"ReadOrder": READ_ORDER_LINK}},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ORDER_CREATE_SCHEMA}},
        },
        **idempotency_key_header("The same key and body replays the first answer."),
    },
)
async def create_order(
    request: Request, api_key: ApiKeyDep, key: IdempotencyKeyDep, order: OrderDep
) -> Response:
    """Check out: reserve stock, charge, confirm; replays with the same Idempotency-Key."""
    # The key is checked here too (the same 400 as order's), so a bad one never costs an
    # upstream call; it is forwarded with the client's headers.
    # Read after authentication; the body cap (413) applies while reading.
    body = await request.body()
    upstream = await order.request(
        "POST", "/orders", content=body, headers=_upstream_headers(request)
    )
    return _relay(upstream)


@router.get(
    "/orders/{order_id}",
    response_model=OrderPublic,
    responses=problem_responses(404, 422),
    operation_id="read_order",
)
async def read_order(
    request: Request,
    api_key: ApiKeyDep,
    order: OrderDep,
    order_id: Annotated[str, Path(pattern=ID_PATTERN)],
) -> Response:
    """Read one of the caller's orders (another customer's order is 404)."""
    upstream = await order.request(
        "GET", f"/orders/{quote(order_id, safe='')}", headers=_upstream_headers(request)
    )
    return _relay(upstream)
