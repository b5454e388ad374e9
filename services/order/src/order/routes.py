"""HTTP routes of the order service: parse, delegate to the service, answer."""

from __future__ import annotations

from fastapi import APIRouter
from servicekit import IdempotencyKeyDep, contract, idempotency_key_header, problem_responses
from starlette.responses import Response

from order.dependencies import CustomerDep, OrderServiceDep
from order.schemas import OrderCreate, OrderPublic

router = APIRouter(tags=["orders"])

READ_ORDER_LINK = {"operationId": "read_order", "parameters": {"order_id": "$response.body#/id"}}


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderPublic,
    responses={
        **problem_responses(400, 401, 402, 409, 413, 422, 503),
        # Stateful testing (and clients) follow the created order to its read.
        201: {"links": {"ReadOrder": READ_ORDER_LINK}},
    },
    openapi_extra=idempotency_key_header(
        "One checkout per (customer, key); a replay answers the stored response."
    ),
)
async def create_order(
    customer: CustomerDep, key: IdempotencyKeyDep, service: OrderServiceDep, body: OrderCreate
) -> Response:
    """Place an order: reserve stock, charge, confirm (idempotent by Idempotency-Key)."""
    outcome = await service.place_order(customer, key, body)
    # The stored bytes are sent as they are, so a replay is identical to the first answer.
    headers = {contract.REPLAYED_HEADER: "true"} if outcome.replayed else None
    return Response(
        outcome.body, status_code=outcome.status, media_type=outcome.media_type, headers=headers
    )


@router.get(
    "/orders/{order_id}",
    response_model=OrderPublic,
    responses=problem_responses(401, 404),
    operation_id="read_order",
)
async def read_order(
    # Any string is safe here: the service parses it as a UUID first, anything else is 404.
    order_id: str,
    customer: CustomerDep,
    service: OrderServiceDep,
) -> OrderPublic:
    """Read one of the caller's orders."""
    return await service.read_order(customer, order_id)
