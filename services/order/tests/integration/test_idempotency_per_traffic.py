"""Idempotency records are kept per traffic kind: a dyed and a live request with the same
(customer, key) never collide, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from order.repository import SqlOrderRepository
from servicekit import Database, create_engine
from servicekit.data import shadow
from servicekit.testing import MakeDatabase


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_same_key_dyed_and_live_are_two_records(
    kind: str, make_database: MakeDatabase
) -> None:
    database = Database(create_engine(await make_database(kind, ["order"]), name="order-tests"))
    now = datetime.now(UTC)
    claims = database.unit_of_work(SqlOrderRepository)
    try:
        with shadow.traffic_scope(True):
            async with claims() as orders:
                assert await orders.claim_key("cus_1", "key-1", "dyed-body", now)
        # The live claim of the same key succeeds: it is another table.
        async with claims() as orders:
            assert await orders.claim_key("cus_1", "key-1", "live-body", now)
        # And each kind still sees (and guards) only its own record.
        async with claims() as orders:
            assert not await orders.claim_key("cus_1", "key-1", "live-body", now)
        with shadow.traffic_scope(True):
            async with claims() as orders:
                dyed = await orders.get_record("cus_1", "key-1")
        async with claims() as orders:
            live = await orders.get_record("cus_1", "key-1")
        assert dyed is not None and live is not None
        assert (dyed.fingerprint, dyed.traffic) == ("dyed-body", "shadow")
        assert (live.fingerprint, live.traffic) == ("live-body", "live")
    finally:
        await database.dispose()
