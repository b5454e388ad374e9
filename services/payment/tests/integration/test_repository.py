"""The SQL guards themselves, raced in separate transactions on the real databases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from payment.repository import SqlChargeRepository
from servicekit import Database, create_engine


def _values(**changes: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "idempotency_key": "k",
        "fingerprint": "f" * 64,
        "order_id": str(uuid.uuid4()),
        "customer_id": "cus_1",
        "amount_cents": 10,
        "currency": "USD",
        "status": "succeeded",
        "created_at": datetime.now(UTC),
        **changes,
    }


async def test_concurrent_refunds_change_the_row_once(database_url: str) -> None:
    database = Database(create_engine(database_url, name="payment-tests"))
    try:
        values = _values()
        async with database.transaction() as session:
            assert await SqlChargeRepository(session).insert_if_absent(values)

        async def refund() -> bool:
            async with database.transaction() as session:
                return await SqlChargeRepository(session).mark_refunded(
                    values["id"], datetime.now(UTC)
                )

        results = await asyncio.gather(*(refund() for _ in range(10)))
        assert sorted(results) == [False] * 9 + [True]
    finally:
        await database.dispose()


async def test_concurrent_inserts_of_one_key_insert_once(database_url: str) -> None:
    database = Database(create_engine(database_url, name="payment-tests"))
    try:

        async def insert() -> bool:
            async with database.transaction() as session:
                return await SqlChargeRepository(session).insert_if_absent(_values())

        results = await asyncio.gather(*(insert() for _ in range(10)))
        assert sorted(results) == [False] * 9 + [True]
    finally:
        await database.dispose()
