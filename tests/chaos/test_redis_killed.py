"""Redis (the private instance every service of the stack uses) killed with SIGKILL under load.

Must hold: zero 5xx; `/healthz` stays 200 on every service (`/readyz` may say Redis is down:
that is its job); the gateway's limits fall back to in-memory counting; product reads still
work, cache misses going to the database; once Redis is back, everything uses it again by
itself; and the common invariants.
"""

from __future__ import annotations

import asyncio

import httpx

from .cluster import Stack, wait_until
from .invariants import check_invariants
from .load import Recorder
from .scenarios import assert_clean_failures, gateway, keys
from .servers import PrivateRedis

OUTAGE_SECONDS = 4.0


async def poll_health(stack: Stack, stop: asyncio.Event) -> list[tuple[str, int]]:
    """Every service's /healthz, five times a second, until `stop`: (service, status)."""
    seen: list[tuple[str, int]] = []
    async with httpx.AsyncClient(timeout=2.0) as client:
        while not stop.is_set():
            for service in stack.services:
                try:
                    status = (await client.get(f"{stack.url(service)}/healthz")).status_code
                except httpx.HTTPError:
                    status = 0
                seen.append((service, status))
            await asyncio.sleep(0.2)
    return seen


async def test_redis_killed_no_5xx_health_unaffected(
    chaos_stack: Stack, redis: PrivateRedis
) -> None:
    stack = chaos_stack
    errors_before = await stack.metric(
        "inventory", "servicekit_cache_requests_total", result="error"
    )
    async with gateway(stack) as client:
        load = Recorder(client, keys(4))
        for _ in range(3):
            assert (await load.checkout()).status == 201, load.summary()
        redis.kill()
        killed_at = load.now()
        stop = asyncio.Event()
        health = asyncio.create_task(poll_health(stack, stop))
        try:
            await asyncio.gather(
                load.run(load.read_product, concurrency=3, seconds=OUTAGE_SECONDS),
                load.run(load.checkout, concurrency=2, seconds=OUTAGE_SECONDS),
            )
        finally:
            stop.set()
            seen = await health
        fallback = await stack.metric("gateway", "servicekit_rate_limit_fallback")
        cache_errors = (
            await stack.metric("inventory", "servicekit_cache_requests_total", result="error")
            - errors_before
        )

        redis.start()
        restarted_at = load.now()

        async def limits_shared_again() -> bool:
            # The gateway probes Redis on the back of requests (never on its own): keep some.
            await load.read_product()
            return await stack.metric("gateway", "servicekit_rate_limit_fallback") == 0

        async def all_ready() -> bool:
            return all([await stack.ready(s) for s in stack.services])

        back_in = await wait_until(limits_shared_again, 20, "gateway limits back on Redis")
        await wait_until(all_ready, 10, "every service ready with Redis back")
        after = [await load.read_product() for _ in range(3)] + [await load.checkout()]
    await check_invariants(stack, load)

    during = [o for o in load.outcomes if o.started >= killed_at and o.ended <= restarted_at]
    assert_clean_failures(load.outcomes, allowed=(200, 201))  # the reads after it too
    assert len(load.of("read", 200)) >= 20, load.summary()
    assert len([o for o in during if o.kind == "checkout"]) >= 2, load.summary()
    sick = [entry for entry in seen if entry[1] != 200]
    assert seen and not sick, f"/healthz not 200 while Redis was down: {sick[:5]}"
    assert fallback == 1, "the gateway's limits did not fall back to in-memory counting"
    assert cache_errors > 0, "inventory's cache never noticed Redis was gone"
    assert all(o.status in (200, 201) for o in after), after
    print(
        f"Redis down {restarted_at - killed_at:.1f}s: {len(during)} answers, none 5xx; "
        f"{len(seen)} health probes all 200; {cache_errors:.0f} cache errors became misses; "
        f"limits back on Redis {back_in:.1f}s after its return; {load.summary()}"
    )
