"""Seed the catalog: `python -m inventory.seed [--shadow-only] [database_url]`.

Applies the migrations, then inserts the products whose sku is missing. Existing rows are
never touched, so re-running never resets stock that orders have already consumed.

The shadow catalogue (servicekit.data.shadow), where dyed load tests shop, is a copy of the
live one with `SHADOW_STOCK` units of everything, so a load test never runs out of stock
and never touches live stock. `--shadow-only` (used by `make shadow-reset`) seeds just that.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from servicekit import Database, create_engine
from servicekit.data.migrations import upgrade
from servicekit.data.shadow import traffic_scope

from inventory.config import InventorySettings
from inventory.repository import SqlInventoryRepository

#: (sku, name, price_cents, stock). "espresso-machine" costs more than the payment service's
#: decline threshold ($1,000.00), so ordering one demonstrates a declined payment.
CATALOG: tuple[tuple[str, str, int, int], ...] = (
    ("coffee-house-blend-250g", "House blend coffee beans, 250 g", 1200, 500),
    ("coffee-ethiopia-yirgacheffe-250g", "Ethiopia Yirgacheffe beans, 250 g", 1650, 300),
    ("coffee-colombia-huila-250g", "Colombia Huila beans, 250 g", 1450, 300),
    ("coffee-decaf-swiss-water-250g", "Swiss Water decaf beans, 250 g", 1350, 200),
    ("coffee-espresso-roast-1kg", "Espresso roast beans, 1 kg", 3900, 150),
    ("tea-sencha-100g", "Japanese sencha green tea, 100 g", 1100, 250),
    ("tea-earl-grey-100g", "Earl Grey black tea, 100 g", 900, 300),
    ("tea-chamomile-50g", "Chamomile herbal tea, 50 g", 750, 200),
    ("tea-assam-breakfast-100g", "Assam breakfast tea, 100 g", 850, 250),
    ("mug-stoneware-350ml", "Stoneware mug, 350 ml", 1800, 400),
    ("mug-double-wall-glass-250ml", "Double-wall glass mug, 250 ml", 2200, 200),
    ("mug-travel-insulated-450ml", "Insulated travel mug, 450 ml", 2900, 150),
    ("grinder-hand-burr", "Hand burr grinder", 8900, 80),
    ("grinder-electric-conical", "Electric conical burr grinder", 19900, 60),
    ("kettle-gooseneck", "Gooseneck pour-over kettle", 6900, 90),
    ("dripper-ceramic-v60", "Ceramic V60 dripper", 2600, 120),
    ("filters-paper-100", "Paper filters, pack of 100", 650, 500),
    ("french-press-1l", "French press, 1 l", 3400, 100),
    ("scale-brewing-0-1g", "Brewing scale, 0.1 g", 4500, 70),
    ("espresso-machine", "Espresso machine", 129900, 100),
)


def catalog_rows() -> list[dict[str, object]]:
    return [
        {
            "sku": sku,
            "name": name,
            "price_cents": price,
            "currency": "USD",
            "stock": stock,
            "reserved": 0,
        }
        for sku, name, price, stock in CATALOG
    ]


#: Units of every product in the shadow catalogue: more than any load test buys.
SHADOW_STOCK = 1_000_000


async def seed_catalog(database: Database) -> int:
    """Insert missing catalog products; returns how many were inserted."""
    async with database.transaction(dyed=False) as session:
        return await SqlInventoryRepository(session).add_missing_products(catalog_rows())


async def seed_shadow_catalog(database: Database) -> int:
    """Copy the live catalogue's missing products into the shadow one, with deep stock."""
    async with database.transaction(dyed=False) as session:
        live = await SqlInventoryRepository(session).list_products(None, 10_000)
        rows = [
            {
                "sku": p.sku,
                "name": p.name,
                "price_cents": p.price_cents,
                "currency": p.currency,
                "stock": SHADOW_STOCK,
                "reserved": 0,
            }
            for p in live
        ]
    with traffic_scope(True):  # the rows are dyed: their `traffic` says shadow
        async with database.transaction() as session:
            return await SqlInventoryRepository(session).add_missing_products(rows)


async def _seed(url: str, *, live: bool) -> tuple[int, int]:
    database = Database(create_engine(url, name="inventory-seed"))
    try:
        inserted = await seed_catalog(database) if live else 0
        return inserted, await seed_shadow_catalog(database)
    finally:
        await database.dispose()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    live = "--shadow-only" not in args
    args = [a for a in args if a != "--shadow-only"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        raise SystemExit("usage: python -m inventory.seed [--shadow-only] [database_url]")
    url = args[0] if args else InventorySettings().database_url
    if url.startswith("sqlite:///"):
        # A fresh checkout has no .run/ yet; SQLite creates the file but not its directory.
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url, "inventory")
    inserted, shadowed = asyncio.run(_seed(url, live=live))
    if live:
        print(
            f"inventory seed: {inserted} product(s) inserted, "
            f"{len(CATALOG) - inserted} already present"
        )
    print(f"inventory seed: {shadowed} product(s) copied to the shadow catalogue")


if __name__ == "__main__":
    main()
