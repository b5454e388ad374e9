"""HTTP routes of the payment service: /charges (faults apply here, never to health)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from servicekit import IdempotencyKeyDep, idempotency_key_header, inject_faults, problem_responses

from payment.dependencies import ChargeServiceDep
from payment.exceptions import PaymentDeclinedError
from payment.schemas import ChargeCreate, ChargeList, ChargePublic

router = APIRouter(prefix="/charges", tags=["charges"], dependencies=[Depends(inject_faults)])


@router.post(
    "",
    response_model=ChargePublic,
    status_code=201,
    responses={200: {"model": ChargePublic}, **problem_responses(400, 402, 422)},
    openapi_extra=idempotency_key_header(
        "One charge per (customer, key); a replay answers the recorded charge."
    ),
)
async def create_charge(
    body: ChargeCreate, key: IdempotencyKeyDep, service: ChargeServiceDep, response: Response
) -> Response | ChargePublic:
    """Charge a customer once per Idempotency-Key (201 new, 200 replay, 402 declined)."""
    outcome = await service.create_charge(body, key)
    charge = ChargePublic.model_validate(outcome.charge)
    if outcome.declined:
        # A declined charge is an outcome the use case recorded (and committed), not an error
        # it raised: its replays answer this same 402.
        return PaymentDeclinedError(
            "the payment provider declined this charge",
            extra={"charge": charge.model_dump(mode="json")},
        ).to_response()
    response.status_code = 201 if outcome.created else 200
    return charge


@router.get("", response_model=ChargeList)
async def list_charges(
    order_id: Annotated[uuid.UUID, Query()], service: ChargeServiceDep
) -> ChargeList:
    """List the charges of one order."""
    charges = await service.list_charges(str(order_id))
    return ChargeList(items=[ChargePublic.model_validate(c) for c in charges])


@router.get("/{charge_id}", response_model=ChargePublic, responses=problem_responses(404))
async def read_charge(charge_id: uuid.UUID, service: ChargeServiceDep) -> ChargePublic:
    """Read one charge."""
    return ChargePublic.model_validate(await service.read_charge(str(charge_id)))


@router.post(
    "/{charge_id}/refund", response_model=ChargePublic, responses=problem_responses(404, 409)
)
async def refund_charge(charge_id: uuid.UUID, service: ChargeServiceDep) -> ChargePublic:
    """Refund a charge (idempotent: a refunded charge is answered as is)."""
    return ChargePublic.model_validate(await service.refund_charge(str(charge_id)))
