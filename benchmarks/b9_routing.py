"""B9: the canary routing decision per outbound call, measured rather than assumed.

Two figures, side by side in one run:
1. The decision alone: `RoutingTable.choose` for a downstream without a route, with a 2 %
   route and with a 0.5 % route (timeit, ns per call).
2. A whole outbound call through `ServiceClient` (credential, propagation headers, breaker,
   metrics, httpx) over an in-process `httpx.MockTransport`, with no routing table and with a
   2 % canary route, in turns; the difference is what routing adds to a call.

Both are compared with B1's noise: the spread of the kit stack's per-request time across B1's
rounds (benchmarks/results/b1_middleware.json), i.e. what one request costs more or less from
one round to the next on this machine. Target: well under it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import timeit

import httpx
from report import RESULTS, median_of, write
from servicekit import Route, RoutingTable, ServiceClient, context

RUNS = 7
DECISIONS = 1_000_000
CALLS = 3_000
STABLE, CANARY = "http://127.0.0.1:8003", "http://127.0.0.1:18003"
#: Signs the credential of calls that never leave the process (MockTransport).
BENCH_SECRET = "b9-" + "bench"


def decision_ns(routing: RoutingTable) -> float:
    choose = routing.choose
    seconds = timeit.timeit(lambda: choose("payment", STABLE), number=DECISIONS)
    return seconds / DECISIONS * 1e9


def table(weight: float | None) -> RoutingTable:
    routing = RoutingTable()
    if weight is not None:
        routing.apply({"payment": Route(CANARY, weight)})
    return routing


async def call_us(client: ServiceClient) -> float:
    with context.request_scope({context.REQUEST_ID: "b9", context.DEADLINE: 1e12}):
        for _ in range(200):  # warm-up
            await client.request("GET", "/charges")
        started = time.perf_counter()
        for _ in range(CALLS):
            await client.request("GET", "/charges")
        return (time.perf_counter() - started) / CALLS * 1e6


def b1_noise_us() -> float | None:
    """Spread (max - min) of the kit stack's per-request time over B1's rounds, in µs."""
    path = RESULTS / "b1_middleware.json"
    if not path.exists():
        return None
    rounds = json.loads(path.read_text())["results"]["servicekit stack, tracing off"]
    per_request = [1e6 / r["rps"] for r in rounds]
    return max(per_request) - min(per_request)


async def measure_calls() -> tuple[list[float], list[float]]:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    plain = ServiceClient("payment", STABLE, token=BENCH_SECRET, transport=transport)
    routed = ServiceClient(
        "payment", STABLE, token=BENCH_SECRET, transport=transport, routing=table(2.0)
    )
    without, with_route = [], []
    for _ in range(RUNS):
        without.append(await call_us(plain))
        with_route.append(await call_us(routed))
    await plain.aclose()
    await routed.aclose()
    return without, with_route


def main() -> None:
    rows = []
    decisions = {}
    for label, weight in (("no route", None), ("2 % route", 2.0), ("0.5 % route", 0.5)):
        median, samples = median_of(RUNS, lambda w=weight: decision_ns(table(w)))  # type: ignore[misc]
        decisions[label] = {"median_ns": median, "samples_ns": samples}
        rows.append([label, f"{median:.0f}", f"{min(samples):.0f}", f"{max(samples):.0f}"])
    without, with_route = asyncio.run(measure_calls())
    plain_us, routed_us = statistics.median(without), statistics.median(with_route)
    added = routed_us - plain_us
    noise = b1_noise_us()
    decision_us = decisions["2 % route"]["median_ns"] / 1000
    verdict = "PASS" if noise is not None and decision_us < noise / 10 else "CHECK"
    calls = [
        ["ServiceClient, no routing table", f"{plain_us:.1f}", "-"],
        ["ServiceClient, 2 % canary route", f"{routed_us:.1f}", f"{added:+.1f}"],
    ]
    noise_text = f"{noise:.1f}" if noise is not None else "n/a (run B1)"
    summary = [
        ["routing decision (2 % route)", f"{decision_us:.3f}"],
        ["whole-call difference with the route (median of runs)", f"{added:+.2f}"],
        ["B1 noise: spread of the kit's per-request time over its rounds", noise_text],
    ]
    write(
        "b9_routing",
        "B9: canary routing decision per outbound call",
        __doc__ or "",
        [
            (
                f"Routing decision, ns per call (median of {RUNS} x {DECISIONS:,})",
                ["table", "median ns", "min ns", "max ns"],
                rows,
            ),
            (
                f"Outbound call through ServiceClient, µs per call (median of {RUNS} x {CALLS:,})",
                ["client", "µs per call", "vs no table"],
                calls,
            ),
            (
                f"Against B1's noise (µs): decision under a tenth of it: {verdict}",
                ["figure", "µs"],
                summary,
            ),
        ],
        {
            "decisions": decisions,
            "call_us": {"without_route": without, "with_route": with_route},
            "added_us": added,
            "decision_us": decision_us,
            "b1_noise_us": noise,
            "pass": verdict == "PASS",
        },
    )


if __name__ == "__main__":
    main()
