"""Payment failing 100% through the gateway's fault API, then cleared.

Must hold: the breaker opens; the webhook receiver gets the documented notice; after the fault
is cleared (DELETE) the breaker closes by itself and a recovery notice arrives; checkouts
succeed again; and the common invariants.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from .cluster import Stack
from .invariants import check_invariants
from .load import Recorder
from .receiver import WebhookReceiver
from .scenarios import (
    CLOSED,
    OPEN,
    assert_clean_failures,
    gateway,
    keys,
    set_faults,
    wait_breaker,
)

#: The notice's fields (servicekit.downstream.webhook: the JSON body POSTed on every state change).
NOTICE_FIELDS = {
    "service",
    "dependency",
    "from_state",
    "to_state",
    "reason",
    "failure_rate",
    "slow_call_rate",
    "at",
    "recovered",
    "transitions",
}


async def wait_notice(
    webhook: WebhookReceiver, since: int, to_state: str, timeout: float
) -> dict[str, Any]:
    """The first notice after index `since` about order's payment breaker going `to_state`."""
    deadline = time.monotonic() + timeout
    while True:
        for notice in webhook.notices()[since:]:
            if notice.get("dependency") == "payment" and notice.get("to_state") == to_state:
                return notice
        assert time.monotonic() < deadline, (
            f"no '{to_state}' notice within {timeout:.0f}s; got {webhook.notices()[since:]}"
        )
        await asyncio.sleep(0.1)


async def test_payment_failing_opens_breaker_notifies_and_recovers(
    chaos_stack: Stack, webhook: WebhookReceiver
) -> None:
    stack = chaos_stack
    since = len(webhook.notices())
    async with gateway(stack) as client:
        load = Recorder(client, keys(4))
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(load.checkout, concurrency=4, until=stop))
        try:
            await load.wait_for("checkout", 201, count=5, timeout=20)
            shown = await set_faults(stack, "payment", error_rate=1.0, latency_ms=0, hang=False)
            assert shown["error_rate"] == 1.0, shown
            faulted_at = load.now()
            await wait_breaker(stack, "payment", OPEN, timeout=10)
            opened_at = load.now()
            opened = await wait_notice(webhook, since, "open", timeout=10)
            await asyncio.sleep(1.0)  # the outage, with the breaker open
            cleared = await set_faults(stack, "payment")
            assert cleared["error_rate"] == 0 and not cleared["hang"], cleared
            cleared_at = load.now()
            await wait_breaker(stack, "payment", CLOSED, timeout=15)
            closed_at = load.now()
            recovered = await wait_notice(webhook, since, "closed", timeout=15)
            successes = len(load.of("checkout", 201))
            await load.wait_for("checkout", 201, count=successes + 5, timeout=20)
        finally:
            stop.set()
            await running
    await check_invariants(stack, load)

    checkouts = load.of("checkout")
    assert_clean_failures(checkouts, allowed=(201, 503))
    outage = [o for o in checkouts if faulted_at <= o.started and o.ended <= cleared_at]
    assert outage and all(o.status == 503 for o in outage), load.summary()
    after = [o for o in checkouts if o.started >= closed_at + 0.2]
    assert after and all(o.status == 201 for o in after), load.summary()

    assert set(opened) >= NOTICE_FIELDS, opened
    assert opened["service"] == "order" and opened["from_state"] == "closed", opened
    assert opened["recovered"] is False and 0 <= opened["failure_rate"] <= 100, opened
    # Errors trip it (a machine busy enough to make calls slow may trip it on those first).
    assert opened["reason"] in ("failure_rate", "consecutive_failures", "slow_call_rate"), opened
    assert datetime.fromisoformat(opened["at"]).tzinfo is not None, opened
    assert set(recovered) >= NOTICE_FIELDS, recovered
    assert recovered["service"] == "order" and recovered["recovered"] is True, recovered
    assert recovered["from_state"] in ("open", "half-open"), recovered
    print(
        f"breaker open {opened_at - faulted_at:.2f}s after the fault, closed "
        f"{closed_at - cleared_at:.2f}s after clearing; notices: {webhook.notices()[since:]}; "
        f"{load.summary()}"
    )
