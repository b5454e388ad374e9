"""Request dependencies: short functions over the lifespan state, exposed as `...Dep` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from servicekit import SessionDep

from payment.config import PaymentSettings
from payment.exceptions import MissingIdempotencyKeyError
from payment.faults import Faults
from payment.repository import ChargeRepository
from payment.service import ChargeService

#: Printable ASCII, 1..255 characters.
IDEMPOTENCY_KEY_PATTERN = r"^[ -~]{1,255}$"


def get_settings(request: Request) -> PaymentSettings:
    settings: PaymentSettings = request.state.settings
    return settings


SettingsDep = Annotated[PaymentSettings, Depends(get_settings)]


async def inject_faults(request: Request) -> None:
    """Apply the configured faults before the handler runs (and before a session is opened)."""
    faults: Faults = request.state.faults
    await faults.apply(request.state.random)


async def get_charge_service(session: SessionDep, settings: SettingsDep) -> ChargeService:
    return ChargeService(
        ChargeRepository(session), decline_above_cents=settings.decline_above_cents
    )


ChargeServiceDep = Annotated[ChargeService, Depends(get_charge_service)]


async def get_idempotency_key(
    key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN),
    ] = None,
) -> str:
    if key is None:
        raise MissingIdempotencyKeyError("POST /charges requires the Idempotency-Key header")
    return key


IdempotencyKeyDep = Annotated[str, Depends(get_idempotency_key)]
