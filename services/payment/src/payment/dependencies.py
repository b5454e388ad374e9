"""Request dependencies: short functions over the lifespan state, exposed as `...Dep` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from servicekit import SessionDep

from payment.config import PaymentSettings
from payment.repository import ChargeRepository
from payment.service import ChargeService


def get_settings(request: Request) -> PaymentSettings:
    settings: PaymentSettings = request.state.settings
    return settings


SettingsDep = Annotated[PaymentSettings, Depends(get_settings)]


async def get_charge_service(session: SessionDep, settings: SettingsDep) -> ChargeService:
    return ChargeService(
        ChargeRepository(session), decline_above_cents=settings.decline_above_cents
    )


ChargeServiceDep = Annotated[ChargeService, Depends(get_charge_service)]
