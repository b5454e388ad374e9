"""PostgreSQL (the private instance) restarted under load, like a crash: `pg_ctl -m immediate`.

Must hold: only requests in flight around the restart fail, each with a clear 503 problem
(never a 500); the pools recover within seconds; no confirmed order is lost (every 201 the
clients got is in the database, confirmed); and the common invariants.
"""

from __future__ import annotations

import asyncio

from .cluster import Stack, wait_until
from .invariants import check_invariants
from .load import Recorder
from .scenarios import assert_clean_failures, gateway, keys
from .servers import PrivatePostgres

#: Once PostgreSQL accepts connections again, checkouts succeed within this many seconds.
RECOVERY_SECONDS = 10.0


async def test_postgres_restart_fails_only_in_flight_requests(
    chaos_stack: Stack, postgres: PrivatePostgres
) -> None:
    stack = chaos_stack
    async with gateway(stack) as client:
        load = Recorder(client, keys(4))
        stop = asyncio.Event()
        checkouts = asyncio.create_task(load.run(load.checkout, concurrency=4, until=stop))
        reads = asyncio.create_task(load.run(load.read_product, concurrency=1, until=stop))
        try:
            await load.wait_for("checkout", 201, count=8, timeout=20)
            down_at = load.now()
            await asyncio.to_thread(postgres.restart, "immediate")
            up_at = load.now()

            async def served_again() -> bool:
                return any(o.started >= up_at for o in load.of("checkout", 201))

            # The first checkout sent after the restart that succeeds: the pools recovered.
            await wait_until(served_again, RECOVERY_SECONDS, "a checkout after the restart")
            recovered_at = min(o.ended for o in load.of("checkout", 201) if o.started >= up_at)
            successes = len(load.of("checkout", 201))
            await load.wait_for("checkout", 201, count=successes + 8, timeout=20)
        finally:
            stop.set()
            await asyncio.gather(checkouts, reads)
    await check_invariants(stack, load)

    assert_clean_failures(load.outcomes, allowed=(200, 201, 503))
    failed = [o for o in load.outcomes if o.status >= 400]
    assert failed, f"nothing failed: was PostgreSQL restarted at all? {load.summary()}"
    # Failures belong to the restart: none began before it, none once the pools had recovered
    # (give order's breakers, which saw inventory and payment fail too, a second to close).
    late = [o for o in failed if o.started < down_at - 0.5 or o.started > recovered_at + 2.0]
    assert not late, f"failures outside the restart: {late[:3]} (down at {down_at:.2f}s)"
    print(
        f"PostgreSQL down at {down_at:.2f}s, accepting again at {up_at:.2f}s, first checkout "
        f"after it {recovered_at - up_at:.2f}s later; {len(failed)} failed (503); "
        f"{load.summary()}"
    )
