"""Traffic dyeing end to end, on the SQLite default and on PostgreSQL + Redis.

A 30 s closed-loop run of dyed checkouts (the `loadtest` key, `X-Shadow-Traffic: 1`) with one
live order in the middle: every live table is unchanged but for exactly that order's rows, the
shadow tables hold the run's orders, and `make shadow-audit` passes.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import threading
import time
from collections import Counter
from typing import Any

from servicekit.data import shadow

from .conftest import REPO, Stack

RUN_SECONDS = 30.0
WORKERS = 4
LIVE_SKU = "mug-stoneware-350ml"
DYED_SKUS = ("coffee-house-blend-250g", "tea-sencha-100g", LIVE_SKU, "filters-paper-100")
Rows = dict[str, set[tuple[tuple[str, Any], ...]]]


def database_urls(stack: Stack) -> list[str]:
    return sorted({v for k, v in stack.env.items() if k.endswith("_DATABASE_URL")})


async def _read(url: str, schema: str | None) -> Rows:
    rows: Rows = {}
    async with shadow.admin_connection(url) as conn:
        for table in await shadow.dyable_tables(conn):
            name = f"{schema}.{table}" if schema else table
            result = await conn.exec_driver_sql(f"SELECT * FROM {name}")
            rows[table] = {tuple(sorted(row._mapping.items())) for row in result}
    return rows


def read_rows(stack: Stack, schema: str | None = None) -> Rows:
    merged: Rows = {}
    for url in database_urls(stack):
        merged.update(asyncio.run(_read(url, schema)))
    return merged


def make(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", *args], cwd=REPO, env=stack.env, capture_output=True, text=True, check=False
    )


def dyed_run(stack: Stack, seconds: float, created: list[str], statuses: Counter[int]) -> None:
    """Closed loop: each worker sends its next checkout when the last one answered."""
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(n: int) -> None:
        with stack.client("loadtest-key") as client:
            i = 0
            while time.monotonic() < deadline:
                sku = DYED_SKUS[(n + i) % len(DYED_SKUS)]
                i += 1
                answer = client.post(
                    "/api/orders",
                    json={"items": [{"sku": sku, "quantity": 1}]},
                    headers={"Idempotency-Key": secrets.token_hex(12), "X-Shadow-Traffic": "1"},
                )
                with lock:
                    statuses[answer.status_code] += 1
                    if answer.status_code == 201:
                        created.append(answer.json()["id"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def belongs_to(table: str, row: dict[str, Any], order_id: str, key: str, holds: set[str]) -> bool:
    """Whether a live row is the live order's own (or its product's new stock)."""
    match table:
        case "customer_order":
            return bool(row["id"] == order_id)
        case "order_item" | "reservation" | "charge":
            return bool(row["order_id"] == order_id)
        case "idempotency_record":
            return bool(row["key"] == key)
        case "reservation_item":
            return row["reservation_id"] in holds
        case "product":
            return bool(row["sku"] == LIVE_SKU)
    return False


def test_dyed_run_changes_no_live_table_and_lands_in_shadow(stack: Stack) -> None:
    before = read_rows(stack)
    assert make(stack, "shadow-reset").returncode == 0
    created: list[str] = []
    statuses: Counter[int] = Counter()
    runner = threading.Thread(target=dyed_run, args=(stack, RUN_SECONDS, created, statuses))
    runner.start()
    time.sleep(RUN_SECONDS / 3)
    key = f"live-{secrets.token_hex(8)}"
    with stack.client() as client:
        live = client.post(
            "/api/orders",
            json={"items": [{"sku": LIVE_SKU, "quantity": 1}]},
            headers={"Idempotency-Key": key},
        )
    assert live.status_code == 201, live.text
    order_id = live.json()["id"]
    # From here on nothing live may change at all: the audit compares against this snapshot.
    snapshot = make(stack, "shadow-audit", "SNAPSHOT=1")
    assert snapshot.returncode == 0, snapshot.stdout + snapshot.stderr
    runner.join()
    after = read_rows(stack)

    print(f"dyed run ({stack.mode}): {dict(statuses)} in {RUN_SECONDS:.0f} s")
    assert statuses[201] >= 20, f"too few dyed checkouts: {dict(statuses)}"
    assert set(statuses) <= {201, 429}, f"unexpected answers: {dict(statuses)}"
    # Every live table is unchanged but for the live order's rows.
    holds = {dict(r)["id"] for r in after["reservation"] if dict(r)["order_id"] == order_id}
    assert len(holds) == 1
    for table in before:
        added = [dict(r) for r in after[table] - before[table]]
        removed = [dict(r) for r in before[table] - after[table]]
        strays = [r for r in added + removed if not belongs_to(table, r, order_id, key, holds)]
        assert strays == [], f"live {table} changed by the dyed run: {strays[:3]}"
        assert all(r["traffic"] == "live" for r in added), table
    (old,), (new,) = (
        [dict(r) for r in rows if dict(r)["sku"] == LIVE_SKU]
        for rows in (before["product"], after["product"])
    )
    assert new["stock"] == old["stock"] - 1 and new["reserved"] == old["reserved"]
    live_order = [dict(r) for r in after["customer_order"] if dict(r)["id"] == order_id]
    assert live_order and live_order[0]["status"] == "confirmed"
    with stack.client() as client:
        assert client.get(f"/api/orders/{order_id}").json()["status"] == "confirmed"

    # The shadow tables hold the run's orders, every one of them marked.
    dyed = read_rows(stack, shadow.SCHEMA)
    orders = {dict(r)["id"]: dict(r) for r in dyed["customer_order"]}
    assert set(created) <= set(orders)
    assert order_id not in orders
    assert {orders[i]["status"] for i in created} == {"confirmed"}
    assert {dict(r)["traffic"] for rows in dyed.values() for r in rows} == {"shadow"}
    charged = {dict(r)["order_id"] for r in dyed["charge"]}
    assert set(created) <= charged

    audit = make(stack, "shadow-audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "against the snapshot" in audit.stdout and "clean" in audit.stdout
