"""What must hold after every fault, checked by SQL against the stack's database.

All three services share the private stack's database (distinct tables), so one connection
sees orders, reservations, products and charges. Sagas are first given time to settle: the
order service's recovery pass finishes or compensates what a fault left open.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from .cluster import Stack, wait_until
from .load import Recorder

#: Saga states a fault may leave behind (order.models.OPEN_SAGA_STATES).
OPEN_SAGA_STATES = ("pending", "reserving", "reserved", "charging", "charged", "compensating")

CHECKS: dict[str, str] = {
    "a failed order still holds stock": """
        SELECT r.order_id FROM reservation r JOIN customer_order o ON o.id = r.order_id
        WHERE o.status = 'failed' AND r.status = 'held'""",
    "a product's reserved count differs from its held reservations": """
        SELECT p.sku FROM product p LEFT JOIN (
            SELECT i.sku, sum(i.quantity) AS held FROM reservation_item i
            JOIN reservation r ON r.id = i.reservation_id WHERE r.status = 'held' GROUP BY i.sku
        ) h ON h.sku = p.sku
        WHERE p.reserved <> coalesce(h.held, 0)""",
    "an order is confirmed without a matching charge": """
        SELECT o.id FROM customer_order o WHERE o.status = 'confirmed' AND NOT EXISTS (
            SELECT 1 FROM charge c WHERE c.order_id = o.id AND c.status = 'succeeded'
            AND c.amount_cents = o.total_cents AND c.id = o.charge_id)""",
    "an order is confirmed but its stock was not taken": """
        SELECT o.id FROM customer_order o WHERE o.status = 'confirmed' AND NOT EXISTS (
            SELECT 1 FROM reservation r WHERE r.order_id = o.id AND r.status = 'committed')""",
    "an order is charged more than once": """
        SELECT order_id FROM charge WHERE status = 'succeeded'
        GROUP BY order_id HAVING count(*) > 1""",
    "a failed order kept its money": """
        SELECT c.order_id FROM charge c JOIN customer_order o ON o.id = c.order_id
        WHERE o.status = 'failed' AND c.status = 'succeeded'""",
    "a charge belongs to no order": """
        SELECT c.id FROM charge c LEFT JOIN customer_order o ON o.id = c.order_id
        WHERE o.id IS NULL""",
}


async def _connect(stack: Stack) -> Any:
    return await asyncpg.connect(stack.env["ORDER_DATABASE_URL"], timeout=10)


async def open_sagas(stack: Stack) -> int:
    conn = await _connect(stack)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM customer_order WHERE saga_state = ANY($1::text[])",
            list(OPEN_SAGA_STATES),
        )
    finally:
        await conn.close()
    return count


async def check_invariants(stack: Stack, recorder: Recorder, settle_timeout: float = 30.0) -> None:
    """Fail the test on any broken invariant; call once the load has stopped."""
    stack.checked = True
    # Processes first: a dead service would also stop the sagas from settling.
    dead = [s for s in stack.services if not stack.is_alive(s)]
    assert not dead, f"processes died: {dead}"
    async with httpx.AsyncClient(timeout=5.0) as client:
        for service in stack.services:
            health = await client.get(f"{stack.url(service)}/healthz")
            assert health.status_code == 200, f"{service} /healthz {health.status_code}"

    async def settled() -> bool:
        return await open_sagas(stack) == 0

    started = time.monotonic()
    try:
        await wait_until(settled, settle_timeout, "every saga settled", interval=0.5)
    except AssertionError:
        raise AssertionError(
            f"{await open_sagas(stack)} sagas still open after {settle_timeout:.0f}s"
        ) from None
    settle_seconds = time.monotonic() - started

    conn = await _connect(stack)
    try:
        broken = {}
        for name, sql in CHECKS.items():
            rows = await conn.fetch(sql)
            if rows:
                broken[name] = [tuple(r) for r in rows[:5]]
        confirmed = recorder.confirmed_orders()
        stored = {
            r["id"]: (r["status"], r["total_cents"])
            for r in await conn.fetch(
                "SELECT id, status, total_cents FROM customer_order WHERE id = ANY($1::text[])",
                list(confirmed),
            )
        }
    finally:
        await conn.close()
    lost = [i for i, total in confirmed.items() if stored.get(i) != ("confirmed", total)]
    if lost:
        broken["a confirmed answer has no confirmed order"] = lost[:5]
    assert not broken, f"invariants broken (settled in {settle_seconds:.1f}s): {broken}"
    answered = [o for o in recorder.of("checkout", 201) if o.body.get("status") != "confirmed"]
    assert not answered, f"201 without status confirmed: {answered[:3]}"
