"""Payment hanging (fault `hang=true`): every charge waits until the caller gives up.

Must hold: order's timeouts fire; the failure/slow-call rate opens the breaker; checkouts get
a 503 within the timeout budget, then fast while the breaker is open; order's process count,
threads, open files and memory stay flat; and the common invariants.
"""

from __future__ import annotations

import asyncio
import os

from .cluster import Stack
from .invariants import check_invariants
from .load import Recorder, percentile
from .scenarios import (
    CLOSED,
    HTTP_TIMEOUT,
    OPEN,
    assert_clean_failures,
    fast_bound,
    gateway,
    keys,
    latency_p99,
    rejected_calls,
    set_faults,
    wait_breaker,
)

#: A checkout that meets a hanging payment waits at most one timeout for each payment call it
#: makes before the breaker opens: the charge, the look-up of a charge its lost answer might
#: have made, the look-up in compensation. The rest is a second of its own work, at most.
BUDGET = 3 * HTTP_TIMEOUT + 1.0


async def failed_calls(stack: Stack) -> float:
    """Calls order's payment breaker counted as failed (errors and timeouts)."""
    return await stack.metric(
        "order", "servicekit_breaker_calls_total", dependency="payment", outcome="failure"
    )


def footprint(stack: Stack) -> dict[str, int]:
    pid = stack.pid("order")
    return {
        "processes": stack.processes("order"),
        "threads": stack.threads("order"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss": stack.rss_bytes("order"),
    }


async def test_payment_hanging_times_out_opens_breaker_and_stays_flat(
    chaos_stack: Stack,
) -> None:
    stack = chaos_stack
    async with gateway(stack) as client:
        load = Recorder(client, keys(4))
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(load.checkout, concurrency=4, until=stop))
        try:
            await load.wait_for("checkout", 201, count=8, timeout=20)
            before = footprint(stack)
            failed_before = await failed_calls(stack)
            rejected_before = await rejected_calls(stack, "payment")
            await set_faults(stack, "payment", error_rate=0.0, latency_ms=0, hang=True)
            hung_at = load.now()
            await wait_breaker(stack, "payment", OPEN, timeout=10)
            opened_at = load.now()
            await asyncio.sleep(3.0)  # hanging all along: half-open probes hang and re-open
            during = footprint(stack)
            failed = await failed_calls(stack) - failed_before
            rejected = await rejected_calls(stack, "payment") - rejected_before
            await set_faults(stack, "payment")
            cleared_at = load.now()
            await wait_breaker(stack, "payment", CLOSED, timeout=15)
            successes = len(load.of("checkout", 201))
            await load.wait_for("checkout", 201, count=successes + 5, timeout=20)
        finally:
            stop.set()
            await running
    after = footprint(stack)
    await check_invariants(stack, load)

    checkouts = load.of("checkout")
    assert_clean_failures(checkouts, allowed=(201, 503))
    hanging = [o for o in checkouts if hung_at <= o.started and o.ended <= cleared_at]
    assert hanging and all(o.status == 503 for o in hanging), load.summary()
    # Timeouts fired: calls failed, and the checkouts caught by the hang waited about one
    # timeout for them (those in flight when it began included: with every worker busy, the
    # checkouts started after it may all find the breaker already open).
    caught = [o for o in checkouts if o.status == 503 and hung_at <= o.ended <= cleared_at]
    slowest = max(o.latency for o in caught)
    assert failed > 0 and slowest >= 0.9 * HTTP_TIMEOUT, f"{failed=}, {slowest=:.2f}s"
    assert slowest <= BUDGET, f"a checkout took {slowest:.2f}s (budget {BUDGET:.1f}s)"
    # Open: checkouts no longer wait on payment (each half-open probe still waits once).
    open_phase = [o for o in hanging if o.started >= opened_at + 0.2]
    assert len(open_phase) >= 5, load.summary()
    assert rejected >= len(open_phase) - 3, f"{rejected=} for {len(open_phase)} checkouts"
    p90 = percentile((o.latency for o in open_phase), 90)
    healthy = [o for o in checkouts if o.status == 201 and o.ended <= hung_at]
    assert p90 <= fast_bound(healthy), f"open-breaker 503 p90 {p90:.3f}s"

    assert during["processes"] == after["processes"] == before["processes"], (before, after)
    assert max(during["threads"], after["threads"]) <= before["threads"] + 2, (before, after)
    assert after["fds"] <= before["fds"] + 20, (before, during, after)
    assert after["rss"] <= before["rss"] * 1.2 + 16 * 2**20, (before, during, after)
    print(
        f"open {opened_at - hung_at:.2f}s after the hang; slowest 503 {slowest:.2f}s; open-phase "
        f"p99 {latency_p99(open_phase) * 1000:.0f} ms; footprint {before} -> {during} -> {after}; "
        f"{load.summary()}"
    )
