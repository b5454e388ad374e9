"""Idempotency records are kept per traffic kind: a dyed and a live request with the same
(customer, key) never collide, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from order import repository
from servicekit import Database, create_engine
from servicekit.data import shadow
from servicekit.testing import MakeDatabase
from sqlalchemy.exc import IntegrityError


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
async def test_same_key_dyed_and_live_are_two_records(
    kind: str, make_database: MakeDatabase
) -> None:
    database = Database(create_engine(await make_database(kind, ["order"]), name="order-tests"))
    now = datetime.now(UTC)
    try:
        with shadow.traffic_scope(True):
            async with database.transaction() as session:
                await repository.insert_record(session, "cus_1", "key-1", "dyed-body", now)
        # The live claim of the same key succeeds: it is another table.
        async with database.transaction() as session:
            await repository.insert_record(session, "cus_1", "key-1", "live-body", now)
        # And each kind still sees (and guards) only its own record.
        with pytest.raises(IntegrityError):
            async with database.transaction() as session:
                await repository.insert_record(session, "cus_1", "key-1", "live-body", now)
        with shadow.traffic_scope(True):
            async with database.transaction() as session:
                dyed = await repository.get_record(session, "cus_1", "key-1")
        async with database.transaction() as session:
            live = await repository.get_record(session, "cus_1", "key-1")
        assert dyed is not None and live is not None
        assert (dyed.fingerprint, dyed.traffic) == ("dyed-body", "shadow")
        assert (live.fingerprint, live.traffic) == ("live-body", "live")
    finally:
        await database.dispose()
