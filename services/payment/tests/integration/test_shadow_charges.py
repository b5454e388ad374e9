"""Dyed charges are recorded in the shadow `charge` table, marked, and never sent."""

from __future__ import annotations

import uuid

from payment.provider import SimulatedProvider
from payment.repository import SqlChargeRepository
from payment.schemas import ChargeCreate
from payment.service import ChargeService
from servicekit import Database, create_engine
from servicekit.data import shadow


async def charge(database: Database, key: str, amount: int) -> tuple[str, str, str]:
    service = ChargeService(database.unit_of_work(SqlChargeRepository), decline_above_cents=100_000)
    outcome = await service.create_charge(
        ChargeCreate(
            order_id=uuid.uuid4(),
            customer_id="cus_load",
            amount_cents=amount,
            currency="USD",
        ),
        key,
    )
    return outcome.charge.id, outcome.charge.status, outcome.charge.traffic


async def test_dyed_charge_is_recorded_in_shadow_and_the_same_key_stays_free_live(
    database_url: str,
) -> None:
    database = Database(create_engine(database_url, name="payment-tests"))
    try:
        with shadow.traffic_scope(True):
            dyed_id, status, marker = await charge(database, "key-1", 1_000)
            declined = await charge(database, "key-2", 200_000)
        assert (status, marker) == ("succeeded", "shadow")
        assert declined[1:] == ("declined", "shadow")  # the provider's rule, answered locally
        async with database.transaction(dyed=False) as session:
            assert await SqlChargeRepository(session).get(dyed_id) is None
        live_id, status, marker = await charge(database, "key-1", 1_000)
        assert (status, marker) == ("succeeded", "live") and live_id != dyed_id
    finally:
        await database.dispose()


def test_provider_sends_live_charges_and_never_dyed_ones() -> None:
    provider = SimulatedProvider(decline_above_cents=100)
    live = provider.decide(50), provider.decide(150)
    with shadow.traffic_scope(True):
        dyed = provider.decide(50), provider.decide(150)
    assert [(d.status, d.sent) for d in live] == [("succeeded", True), ("declined", True)]
    assert [(d.status, d.sent) for d in dyed] == [("succeeded", False), ("declined", False)]
