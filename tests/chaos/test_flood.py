"""A flood at 4x capacity, kept light in absolute terms by a stack of its own with small
limits: the gateway admits 12 requests a second (6 per client), order works on 2 at once.
That admitted rate is the capacity; the flood arrives open-loop at 4x it (48 requests a
second: checkouts and product reads from four clients), so "4x" stays a few dozen requests a
second however fast or busy the machine is.

Must hold: shedding engages (429/503, each with Retry-After, and counted in
`servicekit_shed_requests`); no 500 and no dropped connection; goodput stays above zero;
nothing crashes and memory stays bounded; and the common invariants.
"""

from __future__ import annotations

import random

from loadtest.openloop import Request

from .cluster import Stack
from .conftest import MakeStack
from .invariants import check_invariants
from .load import Recorder, percentile
from .scenarios import assert_clean_failures, gateway, keys

CAPACITY = 12
#: Default breakers: under a flood, calls slow down, and breakers tuned to trip on the first
#: slow second would answer the flood themselves, before the shedding tiers are reached.
LIMITS = {
    "GATEWAY_GLOBAL_RATE_LIMIT": f"{CAPACITY}/second",
    "GATEWAY_CLIENT_RATE_LIMIT": f"{CAPACITY // 2}/second",
    "ORDER_MAX_CONCURRENCY": "2",
    "INVENTORY_MAX_CONCURRENCY": "4",
    "PAYMENT_MAX_CONCURRENCY": "4",
}
FLOOD_SECONDS = 3.0


async def test_flood_at_4x_capacity_sheds_and_keeps_serving(make_stack: MakeStack) -> None:
    stack: Stack = make_stack(**LIMITS)
    async with gateway(stack, connections=1000) as client:
        load = Recorder(client, keys(4), connections=1000)
        warm = [await load.checkout() for _ in range(4)]
        assert all(o.status == 201 for o in warm), load.summary()
        rss_before = {s: stack.rss_bytes(s) for s in stack.services}

        rng = random.Random(3)

        def mixed() -> Request:
            return load.checkout_request() if rng.random() < 0.7 else load.read_request()

        flood = await load.open_loop(mixed, rate=4 * CAPACITY, seconds=FLOOD_SECONDS)
    rss_after = {s: stack.rss_bytes(s) for s in stack.services}
    await check_invariants(stack, load)

    assert_clean_failures(load.outcomes, allowed=(200, 201, 429, 503))
    shed = [o for o in flood if o.status in (429, 503)]
    goodput = [o for o in flood if o.status in (200, 201)]
    assert shed, f"nothing was shed at 4x capacity: {load.summary()}"
    checkouts = [o for o in goodput if o.kind == "checkout"]
    assert checkouts, f"no checkout got through: {load.summary()}"
    tiers = {
        tier: sum(
            [
                await stack.metric(s, "servicekit_shed_requests_total", tier=tier)
                for s in stack.services
            ]
        )
        for tier in ("access", "service", "data")
    }
    counted = sum(tiers.values())
    assert counted > 0, f"servicekit_shed_requests counted nothing: {load.summary()}"
    for service in stack.services:
        assert rss_after[service] <= rss_before[service] * 1.2 + 16 * 2**20, (
            f"{service} RSS {rss_before[service] >> 20} -> {rss_after[service] >> 20} MiB"
        )
    shed_p99 = percentile((o.latency for o in shed), 99)
    rss_mib = {s: rss_after[s] >> 20 for s in stack.services}
    print(
        f"capacity {CAPACITY}/s; flood {len(flood)} requests at "
        f"{4 * CAPACITY}/s: {len(goodput)} served, {len(shed)} shed "
        f"(p99 {shed_p99 * 1000:.0f} ms), counted as shed by tier {tiers}; "
        f"RSS MiB {rss_mib}; {load.summary()}"
    )
