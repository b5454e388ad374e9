"""Dyed traffic on the inventory's tables, on PostgreSQL and SQLite: shadow tables chosen per
unit of work, fail-closed writes, the shadow catalogue, and the pollution audit and reset."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from inventory.main import create_app
from inventory.models import Product
from inventory.seed import SHADOW_STOCK, seed_catalog, seed_shadow_catalog
from servicekit import SessionDep, ShadowWriteError
from servicekit.data import shadow
from servicekit.testing import lifespan_client
from sqlalchemy import select, text, update

from .conftest import AUTH, make_settings

DYED = {**AUTH, "X-Shadow-Traffic": "1"}
SKU = "mug-stoneware-350ml"


async def levels(store: Any, sku: str, *, dyed: bool) -> tuple[int, int, str]:
    async with store.database.transaction(dyed=dyed) as session:
        product = await session.get(Product, sku)
        assert product is not None
        return product.stock, product.reserved, product.traffic


async def seeded(store: Any) -> None:
    await seed_catalog(store.database)
    await seed_shadow_catalog(store.database)


async def test_translate_map_is_chosen_per_unit_of_work_from_the_context(store: Any) -> None:
    async with store.database.transaction() as session:
        live = (await session.connection()).sync_connection.get_execution_options()
    with shadow.traffic_scope(True):
        async with store.database.transaction() as session:
            dyed = (await session.connection()).sync_connection.get_execution_options()
    assert "schema_translate_map" not in live
    assert dyed["schema_translate_map"][None] == "shadow"


async def test_dyed_reservation_takes_shadow_stock_and_leaves_live_stock(
    client: httpx.AsyncClient, store: Any
) -> None:
    await seeded(store)
    before = await levels(store, SKU, dyed=False)
    body = {
        "order_id": "7f1f7a4e-4a57-4b43-9d4c-8f0c8f0c8f0c",
        "items": [{"sku": SKU, "quantity": 3}],
    }
    dyed = await client.post("/reservations", json=body, headers=DYED)
    assert dyed.status_code == 201, dyed.text
    assert await levels(store, SKU, dyed=False) == before
    assert await levels(store, SKU, dyed=True) == (SHADOW_STOCK, 3, "shadow")
    # The same order id, live: its own reservation, in the live tables (no collision).
    live = await client.post("/reservations", json=body)
    assert live.status_code == 201, live.text
    assert live.json()["id"] != dyed.json()["id"]
    assert await levels(store, SKU, dyed=False) == (before[0], before[1] + 3, "live")
    # Reads follow the dye too.
    shown = await client.get(f"/products/{SKU}", headers=DYED)
    assert shown.json()["available"] == SHADOW_STOCK - 3


async def test_shadow_catalogue_is_the_live_one_with_deep_stock(store: Any) -> None:
    await seeded(store)
    async with store.database.transaction(dyed=False) as session:
        live = {p.sku: p for p in (await session.scalars(select(Product))).all()}
    async with store.database.transaction(dyed=True) as session:
        dyed = {p.sku: p for p in (await session.scalars(select(Product))).all()}
    assert dyed.keys() == live.keys() and len(live) >= 20
    for sku, product in dyed.items():
        assert (product.name, product.price_cents) == (live[sku].name, live[sku].price_cents)
        assert (product.stock, product.reserved, product.traffic) == (SHADOW_STOCK, 0, "shadow")
    assert {p.traffic for p in live.values()} == {"live"}


async def test_dyed_write_without_a_shadow_table_raises_and_writes_nothing_live(
    store: Any,
) -> None:
    await seeded(store)
    before = await levels(store, SKU, dyed=False)
    with shadow.traffic_scope(True):
        # Raw SQL names no table the translate map can move.
        with pytest.raises(ShadowWriteError):
            async with store.database.transaction() as session:
                await session.execute(text("UPDATE product SET stock = 0"))
        # A live unit of work opened inside a dyed request.
        with pytest.raises(ShadowWriteError):
            async with store.database.transaction(dyed=False) as session:
                await session.execute(update(Product).values(stock=0))
        # Reads are not refused.
        async with store.database.transaction(dyed=False) as session:
            assert await session.scalar(text("SELECT count(*) FROM product")) >= 20
    assert await levels(store, SKU, dyed=False) == before


async def test_dyed_request_hitting_an_unmapped_write_gets_a_problem(
    database_url: str, store: Any, clock: Any
) -> None:
    await seeded(store)
    before = await levels(store, SKU, dyed=False)
    app = create_app(make_settings(database_url), clock=clock)
    broken = APIRouter()

    @broken.post("/broken-write")
    async def broken_write(session: SessionDep) -> dict[str, str]:
        await session.execute(text("UPDATE product SET stock = stock - 1"))
        return {"done": "yes"}

    app.include_router(broken)
    async with lifespan_client(app, headers=AUTH) as client:
        answer = await client.post("/broken-write", headers={"X-Shadow-Traffic": "1"})
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"].endswith("shadow-write-refused"), problem
    assert problem["trace_id"] and problem["request_id"]
    assert await levels(store, SKU, dyed=False) == before


async def test_audit_finds_dyed_rows_and_changed_live_tables_and_reset_empties_shadow(
    database_url: str, store: Any
) -> None:
    await seeded(store)
    async with shadow.admin_connection(database_url) as conn:
        tables, findings = await shadow.audit(conn)
        snapshot = await shadow.live_checksums(conn)
    assert set(tables) >= {"product", "reservation", "reservation_item"} and findings == []
    # A row dyed traffic wrote into a live table.
    async with store.database.transaction(dyed=False) as session:
        await session.execute(
            update(Product).where(Product.sku == SKU).values(traffic=shadow.SHADOW)
        )
    async with shadow.admin_connection(database_url) as conn:
        _, findings = await shadow.audit(conn)
    assert [(f.table, f.problem) for f in findings] == [
        ("product", "1 row(s) written by dyed traffic")
    ]
    # Live stock changed since the snapshot, with a marker that says live.
    async with store.database.transaction(dyed=False) as session:
        await session.execute(update(Product).values(traffic="live"))
        await session.execute(update(Product).where(Product.sku == SKU).values(stock=1))
    async with shadow.admin_connection(database_url) as conn:
        _, findings = await shadow.audit(conn, snapshot)
    assert [(f.table, f.problem) for f in findings] == [("product", "changed since the snapshot")]
    async with shadow.admin_connection(database_url) as conn:
        deleted = await shadow.reset(conn)
    assert deleted["product"] >= 20
    async with store.database.transaction(dyed=True) as session:
        assert (await session.scalars(select(Product))).all() == []
    async with store.database.transaction(dyed=False) as session:
        assert len((await session.scalars(select(Product))).all()) >= 20
