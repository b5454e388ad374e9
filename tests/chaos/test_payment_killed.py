"""Payment killed (SIGKILL) mid-load, restarted later.

Must hold: the breaker opens; checkout answers 503 fast; no stock stays reserved for a failed
order; no order confirmed without a charge, no double charge; after the restart the breaker
closes by itself and checkouts succeed again.
"""

from __future__ import annotations

import asyncio

from .cluster import Stack
from .invariants import check_invariants
from .load import Recorder, percentile
from .scenarios import (
    CLOSED,
    OPEN,
    assert_clean_failures,
    breaker_state,
    fast_bound,
    gateway,
    keys,
    latency_p99,
    rejected_calls,
    wait_breaker,
)


async def test_payment_killed_then_restarted(chaos_stack: Stack) -> None:
    stack = chaos_stack
    async with gateway(stack) as client:
        load = Recorder(client, keys(4))
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(load.checkout, concurrency=4, until=stop))
        try:
            await load.wait_for("checkout", 201, count=8, timeout=20)
            rejected_before = await rejected_calls(stack, "payment")
            stack.kill("payment")
            killed_at = load.now()
            await wait_breaker(stack, "payment", OPEN, timeout=5)
            opened_at = load.now()
            await asyncio.sleep(2.5)  # the outage, with the breaker open
            rejected = await rejected_calls(stack, "payment") - rejected_before
            restarting_at = load.now()
            restarted_in = await stack.restart("payment")
            restarted_at = load.now()
            await wait_breaker(stack, "payment", CLOSED, timeout=10)
            closed_at = load.now()
            successes = len(load.of("checkout", 201))
            await load.wait_for("checkout", 201, count=successes + 8, timeout=20)
        finally:
            stop.set()
            await running
    await check_invariants(stack, load)

    checkouts = load.of("checkout")
    assert_clean_failures(checkouts, allowed=(201, 503))
    before = [o for o in checkouts if o.ended < killed_at]
    assert before and all(o.status == 201 for o in before), load.summary()

    # Breaker open and payment dead: every checkout is a 503 that never tried payment (the
    # breaker refused at least its charge), and a fast one.
    outage = [o for o in checkouts if opened_at + 0.2 <= o.started and o.ended <= restarting_at]
    assert len(outage) >= 5, f"too little traffic during the outage: {load.summary()}"
    assert all(o.status == 503 for o in outage), load.summary()
    assert rejected >= len(outage), f"{rejected:.0f} calls refused for {len(outage)} checkouts"
    healthy = percentile((o.latency for o in before), 50)
    shown = (
        f"outage 503 p50 {percentile((o.latency for o in outage), 50) * 1000:.0f} ms, "
        f"p99 {latency_p99(outage) * 1000:.0f} ms; healthy 201 p50 {healthy * 1000:.0f} ms"
    )
    assert latency_p99(outage) <= fast_bound(before), shown

    # Closed again by itself (no operator), and checkouts succeed. A cold restarted payment may
    # answer its first calls slowly enough to re-open the breaker once (slow-call rate); that is
    # the breaker doing its job, so what must hold is that it settles closed and checkouts flow.
    last = sorted(checkouts, key=lambda o: o.started)[-8:]
    assert all(o.started > closed_at and o.status == 201 for o in last), load.summary()
    assert await breaker_state(stack, "payment") == CLOSED
    print(
        f"killed at {killed_at:.1f}s, open after {opened_at - killed_at:.2f}s; {shown} "
        f"({len(outage)} answers, {rejected:.0f} calls refused by the breaker); "
        f"payment ready {restarted_in:.1f}s after restart, breaker closed "
        f"{closed_at - restarted_at:.2f}s later; {load.summary()}"
    )
