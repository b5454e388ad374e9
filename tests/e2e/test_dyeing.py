"""Traffic dyeing end to end, on the SQLite default and on PostgreSQL + Redis.

A 30 s dyed Locust run (`make loadtest`: its default dye, the `loadtest` key, the checkout-heavy
mix) with one live order placed in the middle: every live table is unchanged but for exactly
that order's rows, the shadow tables hold the run's orders, and `make shadow-audit` passes.
With Redis, `make shadow-reset` then deletes every `shadow:` key and no live one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from servicekit.data import shadow

from .conftest import REPO, Stack

#: The load run: dyed (the default), checkout-heavy, one user per loadtest key of the stack.
LOADTEST = {
    "SCENARIO": "journey",
    "DYE": "1",
    "MIX": "checkout",
    "WORKERS": "0",
    "USERS": "8",
    "DURATION": "30s",
    "LOADTEST_API_KEYS": "loadtest-key",
    # The gate is not what this test is about; a shared machine's p99 must not fail it.
    "SLO_P99_MS": "60000",
}
CHECKOUT = "POST /api/orders"
LIVE_SKU = "mug-stoneware-350ml"
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


def start_loadtest(stack: Stack, reports: Path) -> subprocess.Popen[str]:
    """`make loadtest` on the stack, as a user runs it (its output kept for failure messages)."""
    env = {
        **stack.env,
        **LOADTEST,
        "HOST": stack.url("gateway"),
        "LOADTEST_REPORTS_DIR": str(reports),
    }
    return subprocess.Popen(
        ["make", "-s", "loadtest"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_shadow_orders(stack: Stack, run: subprocess.Popen[str], timeout: float) -> None:
    """Until the run's first dyed order is in the shadow tables: the run is under way."""
    deadline = time.monotonic() + timeout
    while not read_rows(stack, shadow.SCHEMA)["customer_order"]:
        assert run.poll() is None, f"the load run ended early:\n{run.communicate()[0]}"
        assert time.monotonic() < deadline, "no dyed order reached the shadow tables"
        time.sleep(0.5)


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


def test_dyed_run_changes_no_live_table_and_lands_in_shadow(stack: Stack, tmp_path: Path) -> None:
    before = read_rows(stack)
    assert make(stack, "shadow-reset").returncode == 0
    run = start_loadtest(stack, tmp_path)
    try:
        wait_for_shadow_orders(stack, run, timeout=60)
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
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output
    (report,) = tmp_path.iterdir()
    summary = json.loads((report / "summary.json").read_text())
    after = read_rows(stack)

    checkouts = summary["latency_ms"]["endpoints"][CHECKOUT]
    print(f"dyed Locust run ({stack.mode}): {summary['requests']} requests, checkouts {checkouts}")
    assert summary["dye"] is True and summary["mix"] == "checkout"
    assert checkouts["outcomes"]["ok"] >= 20, f"too few dyed checkouts: {checkouts}"
    # Answered or shed on purpose, never an error; deep shadow stock: never out of stock.
    assert summary["outcomes"]["error"]["count"] == summary["outcomes"]["business"]["count"] == 0
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

    # The shadow tables hold the run's orders, each charged, every row of them marked: one
    # confirmed order per checkout answered 201, plus at most one per user for the checkouts
    # in flight when Locust stopped its users (placed, but their answers never counted).
    dyed = read_rows(stack, shadow.SCHEMA)
    orders = {dict(r)["id"]: dict(r) for r in dyed["customer_order"]}
    confirmed = {i for i, o in orders.items() if o["status"] == "confirmed"}
    in_flight = int(LOADTEST["USERS"])
    assert checkouts["outcomes"]["ok"] <= len(confirmed) <= checkouts["outcomes"]["ok"] + in_flight
    assert len(orders) <= checkouts["requests"] + in_flight
    assert order_id not in orders
    assert {dict(r)["traffic"] for rows in dyed.values() for r in rows} == {"shadow"}
    charged = {dict(r)["order_id"] for r in dyed["charge"]}
    assert confirmed <= charged

    audit = make(stack, "shadow-audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "against the snapshot" in audit.stdout and "clean" in audit.stdout

    # With Redis: `make shadow-reset` deletes every key under the shadow prefix (dyed rate-limit
    # counters, dyed cached reads: most expire within seconds, so one is planted that would
    # not) and no other key.
    if redis_url := stack.env.get("GATEWAY_REDIS_URL"):
        dyed_key, live_key = (f"{p}e2e-{secrets.token_hex(6)}" for p in (shadow.REDIS_PREFIX, ""))
        asyncio.run(redis_call(redis_url, "mset", {dyed_key: "e2e", live_key: "e2e"}))
        reset = make(stack, "shadow-reset")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        assert f"{shadow.REDIS_PREFIX}* key(s) deleted" in reset.stdout, reset.stdout
        assert asyncio.run(redis_call(redis_url, "keys", f"{shadow.REDIS_PREFIX}*")) == []
        assert asyncio.run(redis_call(redis_url, "unlink", live_key)) == 1  # kept (now gone)


async def redis_call(url: str, command: str, *args: Any) -> Any:
    client = Redis.from_url(url, decode_responses=True)
    try:
        return await getattr(client, command)(*args)
    finally:
        await client.aclose()
